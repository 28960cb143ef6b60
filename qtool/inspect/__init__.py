"""inspect: facts about a model, and how far a quantized model drifts from its float original."""
