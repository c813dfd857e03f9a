"""fastmixste: a fast, weight-compatible MixSTE stack with fused Triton attention kernels."""

from setuptools import setup

setup(
    name="fastmixste",
    version="0.1.0",
    description="MixSTE 3D human pose transformer with fused Triton attention kernels, "
    "weight-compatible with upstream MixSTE checkpoints",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["fastmixste", "fastmixste.data", "fastmixste.deploy", "fastmixste.eval", "fastmixste.io",
              "fastmixste.kernels", "fastmixste.model", "fastmixste.perf", "fastmixste.video", "train", "benchmarks"],
    package_dir={"fastmixste.kernels": "kernels"},
    package_data={"train": ["configs/*.yaml"], "fastmixste": ["weights/*.pt", "weights/*.json"]},
    install_requires=[
        "torch>=2.6",
        # 3.2/3.3 reject the temporal kernels (chained `a and b and c`); 3.2 also aborts compiling the spatial
        # backward for head_dim 128 on sm_90. 3.4 compiles both (benchmarks/gpu_check.py MIN_TRITON says why).
        "triton>=3.4; platform_system == 'Linux'",
        "numpy>=1.24",
        "tqdm>=4.60",
        "PyYAML>=6.0",
        "matplotlib>=3.7",
        # Video decoding and MP4 renders (train.infer --video): wheels bundle FFmpeg, no system ffmpeg needed.
        "av>=14",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-benchmark>=4.0", "ruff>=0.6"],
        "xformers": ["xformers>=0.0.28"],
        # Offline 2D detection: 0.10.21 is the last release whose wheels carry the legacy Pose models
        # (model_complexity=1 runs with no download); it needs numpy < 2 and protobuf < 5.
        "video": ["mediapipe==0.10.21", "numpy<2", "protobuf<5"],
        "onnx": ["onnxruntime>=1.16"],
        # Deployment: python -m fastmixste.deploy.export (ONNX via the dynamo exporter), train.infer --runtime onnx.
        "export": ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.16"],
    },
    license="MIT",
)
