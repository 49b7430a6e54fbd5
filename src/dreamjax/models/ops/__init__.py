"""Performance kernels the models use: the LSTM scan with its hand-written backward pass."""
