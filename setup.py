"""Packaging for resnet-cifar: ResNet training on CIFAR binary files, TF1-style."""
from setuptools import find_packages, setup

setup(
    name='resnet-cifar',
    version='0.1.0',
    description='Residual networks on CIFAR-10/100 binary files with tf.compat.v1 queues',
    # The suite's face at the top level; the supporting modules in the resnet_cifar package.
    py_modules=['cifar_input', 'resnet_model', 'resnet_main'],
    packages=find_packages(include=['resnet_cifar']),
    python_requires='>=3.9',
    install_requires=[
        'tensorflow>=2.16',
        'numpy',
        'absl-py',
    ],
    extras_require={
        # The tests start a real TensorBoard, draw a real plot and regenerate the digits sample;
        # pytest-xdist runs them on every core (pytest.ini).
        'test': ['pytest', 'pytest-timeout', 'pytest-xdist', 'tensorboard', 'matplotlib', 'scikit-learn'],
        # scripts/train_and_eval.py starts TensorBoard; scripts/plot_curves.py draws with matplotlib.
        'tensorboard': ['tensorboard'],
        'plot': ['matplotlib'],
        # Only scripts/make_sample_data.py needs scikit-learn (the digits it ships).
        'sample': ['scikit-learn'],
    },
)
