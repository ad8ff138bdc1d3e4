"""Python side of lipsync: the SyncTalk_2D model family in PyTorch, checkpoint loading, ONNX export,
the demo model and the PyTorch baseline benchmark."""
