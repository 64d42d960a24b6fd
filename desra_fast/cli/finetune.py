"""``desra-fast finetune``: fine-tune a GAN-SR model on (LR, pseudo-GT) pairs (DeSRA section 3.3)."""
from __future__ import annotations

import os
import sys

from ._args import finite_float, non_negative_int, positive_int

NAME = "finetune"
HELP = "fine-tune the GAN-SR model on pseudo-GT so it stops producing the detected artifacts"
DESCRIPTION = (
    "Trains the GAN-SR generator (RRDBNet, loaded with load_sr: .pth, .safetensors, ncnn .param or "
    "a packaged name) on pairs (LR, pseudo-GT = mask * MSE-SR + (1 - mask) * GAN-SR) with "
    "Real-ESRGAN's recipe: L1 + VGG19 perceptual + vanilla GAN loss (U-Net discriminator with "
    "spectral norm), Adam, EMA of the generator. Data: --run RUN_DIR (a `desra-fast run --save-sr "
    "png` output; --list restricts it to a `desra-fast select` list) or the four folders --lr "
    "--gan --mse --mask, paired by relative path. Writes OUT/checkpoints/ (resumable state, "
    "atomic) and OUT/net_g_final.pth ({'params_ema', 'params'}, official RRDBNet keys). Killed at "
    "any moment, `--resume` continues bit-identically (same machine and thread count). "
    "Multi-GPU: torchrun --nproc_per_node N -m desra_fast finetune ... --device cuda.")


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="G",
                        help="the GAN-SR model to repair (e.g. RealESRGAN_x4plus.pth, an ncnn .param, "
                             "'realesrgan-x4plus')")
    parser.add_argument("--run", metavar="RUN_DIR", help="output folder of `desra-fast run --save-sr png`")
    parser.add_argument("--list", metavar="TXT", help="with --run: only the images of this list (train.txt)")
    parser.add_argument("--lr", metavar="DIR", help="LR images (with --run: overrides the recorded LR folder)")
    parser.add_argument("--gan", metavar="DIR", help="GAN-SR outputs")
    parser.add_argument("--mse", metavar="DIR", help="MSE-SR outputs")
    parser.add_argument("--mask", metavar="DIR", help="artifact masks (0/255 PNG, SR size)")
    parser.add_argument("--out", required=True, metavar="DIR", help="checkpoints and the final model")
    parser.add_argument("--iters", type=positive_int, default=1000, help="iterations (default 1000)")
    parser.add_argument("--ckpt-every", type=positive_int, default=100, help="checkpoint period (default 100)")
    parser.add_argument("--batch", type=positive_int, default=48, help="total batch over all processes (48)")
    parser.add_argument("--patch", type=positive_int, default=256, help="HR patch size (256)")
    parser.add_argument("--learning-rate", type=finite_float, default=1e-4, help="Adam lr, both nets (1e-4)")
    parser.add_argument("--pixel-weight", type=finite_float, default=1.0, help="L1 weight (1)")
    parser.add_argument("--perceptual-weight", type=finite_float, default=1.0,
                        help="VGG19 perceptual weight (1; 0 turns it off and needs no VGG file)")
    parser.add_argument("--gan-weight", type=finite_float, default=0.1, help="GAN weight (0.1)")
    parser.add_argument("--ema-decay", type=_ema_decay, default="auto",
                        help="EMA decay in [0, 1), or auto (default): 0.999 ** (1000 / generator steps), "
                             "which leaves the EMA the recipe's share of the start weights (0.999 at 1000)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="forward passes in bf16 autocast (fp32 weights, optimiser, EMA); auto (default): "
                             "bf16 where the device has native bf16 (CUDA >= 8.0, avx512_bf16/amx_bf16 CPUs)")
    parser.add_argument("--focus", type=finite_float, default=0.5, metavar="F",
                        help="share of crops centred on a detected region (regions equally likely), the rest "
                             "uniform (default 0.5; 0: uniform crops as in Real-ESRGAN)")
    parser.add_argument("--netd-warmup", type=non_negative_int, default=None, metavar="N",
                        help="discriminator-only iterations first (default: 10%% of --iters, at most 100, when "
                             "the discriminator is random; 0 with --netd)")
    parser.add_argument("--gan-outside", type=finite_float, default=0.0, metavar="W",
                        help="weight of the generator's GAN term farther than --gan-margin px from any detected "
                             "region (default 0: the GAN term acts only near the artifacts, so the generator "
                             "cannot drift elsewhere; 1: Real-ESRGAN's recipe)")
    parser.add_argument("--gan-margin", type=non_negative_int, default=16, metavar="PX",
                        help="HR pixels around the masks that keep the full GAN weight (16)")
    parser.add_argument("--outside-target", choices=("model", "pseudo-gt"), default="model",
                        help="the target outside the detected regions: model (default): the starting "
                             "generator's own output on the same LR crop, so only the regions move the "
                             "weights; pseudo-gt: the crop of the pseudo-GT image (the paper's recipe)")
    parser.add_argument("--outside-weight", type=finite_float, default=1.0, metavar="W",
                        help="weight of the L1 and perceptual terms' pixels outside the detected regions, "
                             "the regions' pixels weighing 1 (default 1: the paper's recipe)")
    parser.add_argument("--perceptual-norm", choices=("target", "raw"), default="target",
                        help="target (default): each VGG layer's distance divided by its mean |feature| on the "
                             "training targets; raw: Real-ESRGAN's raw distances (torchvision scale)")
    parser.add_argument("--gt-usm", action="store_true",
                        help="sharpen the pseudo-GT with Real-ESRGAN's unsharp mask (off by default: see "
                             "docs/finetune.md)")
    parser.add_argument("--vgg", metavar="PATH", help="VGG19 weights: torchvision state dict or the Keras .h5 "
                        "(default: found in the torch hub cache or the desra_fast cache)")
    parser.add_argument("--netd", metavar="PATH", help="discriminator to start from (RealESRGAN_x4plus_netD.pth); "
                        "default: random init")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of data order and init (0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun: cuda)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _ema_decay(text: str):
    if text == "auto":
        return "auto"
    v = finite_float(text)
    if not 0.0 <= v < 1.0:
        import argparse

        raise argparse.ArgumentTypeError(f"must be 'auto' or in [0, 1), got {text}")
    return v


def load_generator(source, device: str = "cpu"):
    """The trainable RRDBNet of a GAN-SR model file (any form ``load_sr`` reads)."""
    import copy

    from ..models import RRDBNet, load_sr

    model = load_sr(source)
    if not isinstance(model.module, RRDBNet):
        raise ValueError(f"{source}: finetune trains RRDBNet generators (Real-ESRGAN, ESRGAN, LDL); "
                         f"this model is {model.info.get('arch', type(model.module).__name__)}")
    net = copy.deepcopy(model.module).float().requires_grad_(True)
    return net, int(model.scale)


def _samples(args, parser):
    from ..train import data

    folders = [args.gan, args.mse, args.mask]
    if args.run:
        if any(folders):
            parser.error("finetune: give --run RUN_DIR or the folders --lr --gan --mse --mask, not both")
        return data.from_run(args.run, args.list, lr_dir=args.lr)
    if args.list:
        only = data.read_list(args.list)
    else:
        only = None
    if not all(folders + [args.lr]):
        parser.error("finetune needs --run RUN_DIR or all of --lr --gan --mse --mask")
    return data.pair_folders(args.lr, args.gan, args.mse, args.mask, only=only)


def run(args, parser) -> int:
    for name in ("learning_rate", "pixel_weight", "perceptual_weight", "gan_weight", "outside_weight"):
        if getattr(args, name) < 0:
            parser.error(f"finetune: --{name.replace('_', '-')} must be >= 0")
    for name in ("focus", "gan_outside"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"finetune: --{name.replace('_', '-')} must be in [0, 1]")
    from ..models.checkpoint import CheckpointError as ModelCheckpointError
    from ..train import (CheckpointError, DataError, FinetuneConfig, FinetuneData, finetune,
                         load_discriminator, load_vgg19)

    rank0 = int(os.environ.get("RANK", "0")) == 0
    try:
        samples = _samples(args, parser)
        net_g, scale = load_generator(args.model)
        cfg = FinetuneConfig(iters=args.iters, ckpt_every=args.ckpt_every, batch=args.batch, patch=args.patch,
                             learning_rate=args.learning_rate, pixel_weight=args.pixel_weight,
                             perceptual_weight=args.perceptual_weight, gan_weight=args.gan_weight,
                             ema_decay=args.ema_decay, seed=args.seed, precision=args.precision,
                             focus=args.focus, netd_warmup=args.netd_warmup, gan_outside=args.gan_outside,
                             gan_margin=args.gan_margin, perceptual_norm=args.perceptual_norm,
                             gt_usm=args.gt_usm, outside_target=args.outside_target,
                             outside_weight=args.outside_weight)
        cfg.check()
        vgg = load_vgg19(args.vgg) if args.perceptual_weight > 0 else None
        net_d = load_discriminator(args.netd) if args.netd else None
        data = FinetuneData(samples, scale, patch=args.patch, seed=args.seed, progress=rank0 and not args.quiet,
                            focus=args.focus, gt_usm=args.gt_usm)
        if rank0:
            print(f"desra-fast finetune: {len(samples)} training image(s), x{scale}, {args.iters} iterations, "
                  f"batch {args.batch}, HR patch {args.patch}, VGG19: "
                  f"{'off' if vgg is None else vgg.convention + ' weights'}", file=sys.stderr)
        res = finetune(net_g, data, args.out, cfg, vgg=vgg, net_d=net_d, device=args.device,
                       resume=args.resume, progress=rank0 and not args.quiet)
    except (DataError, CheckpointError, ModelCheckpointError, FileNotFoundError, ValueError,
            FloatingPointError) as exc:
        print(f"desra-fast finetune: {exc}", file=sys.stderr)
        return 1
    if rank0:
        if res.resumed_from >= res.iterations:
            print(f"desra-fast finetune: already finished ({res.iterations} iterations): {res.final_path}")
        else:
            losses = "  ".join(f"{k} {v:.4g}" for k, v in res.last_losses.items())
            print(f"desra-fast finetune: {res.iterations - res.resumed_from} iterations in {res.seconds:.1f} s "
                  f"({res.seconds_per_iter:.2f} s/iteration, {res.precision})"
                  f"{' (resumed at ' + str(res.resumed_from) + ')' if res.resumed_from else ''}; "
                  f"final model {res.final_path}" + (f"; last losses: {losses}" if losses else ""))
    return 0
