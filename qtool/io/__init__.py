"""Reading and writing the files qtool exchanges with users: input lists, raw tensors, encodings."""
