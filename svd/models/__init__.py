"""The networks: UNet, temporal VAE, OpenCLIP tower, their layers, and the variants built on them."""
