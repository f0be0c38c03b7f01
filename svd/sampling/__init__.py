"""From noise to video: EDM sampling, the image-to-video pipeline and the long-video modes."""
