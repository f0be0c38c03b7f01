"""MindSpore implementation of Stable Video Diffusion (SVD / SVD-XT).

oneDNN picks AVX-512 kernels for convolutions on some CPUs that run about a
hundred times slower under MindSpore's CPU build; capping the ISA before
MindSpore is imported avoids that. A value set by the user wins.
"""
import os

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("GLOG_v", "3")
