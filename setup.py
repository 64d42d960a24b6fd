"""Build desra_fast: Python package + the `desra_fast._C` extension built by CMake from csrc/.

CMake options are forwarded from the environment:
  DESRA_WITH_CUDA=ON|OFF   build the .cu files too (default: ON when nvcc is found)
  DESRA_NATIVE=ON|OFF      -march=native for the whole module (default: OFF; the default build is
                           portable and picks AVX-512 / AVX2 / baseline kernels at run time)
  CMAKE_BUILD_TYPE         default Release
"""
import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: Path):
        super().__init__(name, sources=[])
        self.sourcedir = str(sourcedir)


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_type = os.environ.get("CMAKE_BUILD_TYPE", "Release")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
        ]
        for opt in ("DESRA_WITH_CUDA", "DESRA_NATIVE"):
            if opt in os.environ:
                args.append(f"-D{opt}={os.environ[opt]}")
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cmake", ext.sourcedir, *args], cwd=build_temp, check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", ".", "--parallel", jobs], cwd=build_temp, check=True)


setup(
    name="desra_fast",
    version="0.1.0",
    description="Fast, exact DeSRA artifact detection for GAN super-resolution (CPU, Triton, CUDA)",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["desra_fast", "desra_fast.*"]) + ["desra_fast.kernels"],
    package_dir={"desra_fast.kernels": "kernels"},
    package_data={"desra_fast": ["data/*.tsv"], "desra_fast.report": ["templates/*"]},
    ext_modules=[CMakeExtension("desra_fast._C", ROOT)],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=["numpy>=1.23", "opencv-python-headless>=4.8", "tqdm>=4.60", "pillow>=9"],
    extras_require={
        "torch": ["torch>=2.1"],
        "triton": ["torch>=2.1", "triton>=3.0"],
        "train": ["torch>=2.1", "h5py>=3.8", "safetensors>=0.4", "tqdm>=4.60"],
        # examples/finetune_demo.py's offline photographs (scikit-image, matplotlib, scikit-learn)
        "demo": ["scikit-image>=0.21", "matplotlib>=3.7", "scikit-learn>=1.3"],
        # desra-fast report's browser tests (Selenium driving the system Chromium)
        "report-test": ["selenium>=4.10"],
        # SegFormer (ADE20K) segmentation: mmseg .pth and Hugging Face checkpoints.
        "seg": ["torch>=2.1", "safetensors>=0.4"],
        # SR models (load_sr): .safetensors files; [spandrel] adds SwinIR, HAT, SPAN... checkpoints
        # (spandrel needs torchvision, whose wheel pins its own torch: install the matching pair).
        "sr": ["torch>=2.1", "safetensors>=0.4"],
        "spandrel": ["torch>=2.1", "safetensors>=0.4", "spandrel>=0.4"],
        # the reference runtime the SR tests and benchmarks compare against; model wheels are --no-deps
        "ncnn": ["ncnn>=1.0.20240410"],
        # ONNX export + ONNX Runtime on CPU. [gpu] is the NVIDIA variant: onnxruntime-gpu (never
        # together with onnxruntime: both ship the same module) and TensorRT.
        "onnx": ["onnx>=1.16,<2", "onnxscript>=0.3", "onnxruntime>=1.18,<2"],
        "gpu": ["onnx>=1.16,<2", "onnxscript>=0.3", "onnxruntime-gpu>=1.18,<2", "tensorrt>=10.0"],
        # OpenVINO on CPU: the fastest exact CPU runtime (runtime="openvino", auto's CPU choice).
        "openvino": ["openvino>=2025.0"],
        # desra-fast run --engine ray (Ray Data actors on one machine or a cluster).
        "ray": ["ray[data]>=2.40,<3"],
        "test": [
            "pytest>=7", "pytest-benchmark>=4", "hypothesis>=6", "scipy>=1.10",
            "scikit-image>=0.21", "pillow>=9",
        ],
    },
    entry_points={"console_scripts": ["desra-fast=desra_fast.cli:main"]},
    zip_safe=False,
)
