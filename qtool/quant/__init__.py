"""Quantization: encodings math, observers, calibration, the plan and the QDQ writer."""
