"""Performance kernels the models use: V's convolutions as GEMMs (`conv`) and the LSTM scan
with its hand-written backward pass (`lstm`)."""
