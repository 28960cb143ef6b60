"""Quantization (the Encoding value itself is qtool/encoding.py, below every layer): observers, calibration, the plan and the QDQ writer."""
