from setuptools import find_packages, setup

setup(
    name="pixelcnn_pp",
    version="0.1.0",
    description="PixelCNN++ (Salimans et al. 2017) in TensorFlow 2 / Keras 3, faithful to the "
                "original TF1 code",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["pixelcnn_pp", "pixelcnn_pp.*"]),
    py_modules=["train", "sample", "eval", "score"],
    include_package_data=True,
    package_data={"pixelcnn_pp.data": ["demo/*.npz", "demo/*.md"]},
    install_requires=["tensorflow>=2.16", "numpy", "imageio", "absl-py", "tensorboard"],
    extras_require={"test": ["pytest", "pytest-xdist"]},
)
