"""inspect: facts about a model, quantization lints, and how far a quantized model drifts from its
float original, per output and per layer (text, JSON or one HTML page)."""
