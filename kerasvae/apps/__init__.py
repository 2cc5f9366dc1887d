"""Applications of trained autoencoders: anomaly detection, denoising, compression, navigation, ..."""
