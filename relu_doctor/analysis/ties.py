"""Why a dead neuron cannot be cut off: ops that tie its channel to others (no torch, no onnx)."""

# ops that mix the neurons with other tensors: no weight downstream can undo their part
TIES = {
    "add": "a residual add reads them (their channels are tied to the other branch)",
    "sub": "a subtraction reads them (their channels are tied to the other operand)",
    "cat": "a concat reads them (their channels are tied to the other inputs)",
    "concat": "a concat reads them (their channels are tied to the other inputs)",
    "stack": "a stack reads them (their channels are tied to the other inputs)",
    "mul": "a multiplication reads them (a gate or a scale ties their channels)",
    "Add": "a residual add reads them (their channels are tied to the other branch)",
    "Sub": "a subtraction reads them (their channels are tied to the other operand)",
    "Concat": "a concat reads them (their channels are tied to the other inputs)",
    "Mul": "a multiplication reads them (a gate or a scale ties their channels)",
}
