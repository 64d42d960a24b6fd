"""Fine-tuning a GAN-SR model away from its artifacts (DeSRA paper section 3.3).

- :mod:`.data`: (LR, pseudo-GT) pairs from folders or a ``desra-fast run`` output, deterministic
  paired crops with flips / 90-degree rotations;
- :mod:`.losses`: L1, VGG19 perceptual, vanilla GAN losses; generator EMA;
- :mod:`.vgg`: VGG19 features from a torchvision state dict or the Keras h5 file;
- :mod:`.discriminator`: Real-ESRGAN's ``UNetDiscriminatorSN`` (BasicSR names);
- :mod:`.loop`: :func:`finetune`, Real-ESRGAN's fine-tuning recipe by default;
- :mod:`.checkpoint`: atomic, exactly resumable checkpoints;
- :mod:`.distributed`: the same loop under ``torchrun`` (DDP).

Needs torch (``pip install 'desra_fast[train]'``; h5py for the Keras VGG19 file).
"""
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_state_file
from .data import DataError, FinetuneData, Sample, from_run, pair_folders, read_list
from .discriminator import UNetDiscriminatorSN, load_discriminator
from .loop import CKPT_DIR, FINAL_NAME, FinetuneConfig, FinetuneResult, finetune
from .losses import DEFAULT_LAYER_WEIGHTS, GANLoss, L1Loss, PerceptualLoss, ema_update
from .vgg import VGG19Features, find_vgg19, load_vgg19

__all__ = [
    "finetune", "FinetuneConfig", "FinetuneResult", "FinetuneData", "Sample", "pair_folders",
    "from_run", "read_list", "UNetDiscriminatorSN", "load_discriminator", "L1Loss",
    "PerceptualLoss", "GANLoss", "ema_update", "DEFAULT_LAYER_WEIGHTS", "VGG19Features",
    "load_vgg19", "find_vgg19", "load_checkpoint", "latest_checkpoint", "load_state_file",
    "CheckpointError", "DataError", "FINAL_NAME", "CKPT_DIR",
]
