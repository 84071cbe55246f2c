"""Write a small ONNX graph from numpy weights, without the `onnx` package.

`postselectd train` runs on a photographer's machine, where only the runtime
dependencies are installed: onnxruntime reads ONNX but cannot write it, and the `onnx`
package is a build-time tool here (models/train_default.py). An ONNX file is a protobuf
message; the few message types a feed-forward head needs are encoded below, by field
number, straight from onnx.proto (onnx/onnx, IR version 8). tests/test_train_head.py
checks the result with onnx.checker where `onnx` is installed, and onnxruntime runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IR_VERSION = 8
OPSET = 17
FLOAT = 1  # TensorProto.DataType.FLOAT
_ATTR_INT = 2  # AttributeProto.AttributeType.INT


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 is encoded as its two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _int(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value)


def _bytes(number: int, value: bytes) -> bytes:
    return _key(number, 2) + _varint(len(value)) + value


def _str(number: int, value: str) -> bytes:
    return _bytes(number, value.encode("utf-8"))


def _tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto: dims=1, data_type=2, name=8, raw_data=9 (little-endian float32)."""
    array = np.ascontiguousarray(array, dtype="<f4")
    body = b"".join(_int(1, d) for d in array.shape)
    return body + _int(2, FLOAT) + _str(8, name) + _bytes(9, array.tobytes())


def _value_info(name: str, shape: tuple[int | str, ...]) -> bytes:
    """ValueInfoProto(name=1, type=2: TypeProto(tensor_type=1: (elem_type=1, shape=2)))."""
    dims = b"".join(_bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d)) for d in shape)
    tensor_type = _int(1, FLOAT) + _bytes(2, dims)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


@dataclass
class Graph:
    """A feed-forward float32 graph: inputs, constant weights, nodes, outputs."""

    name: str
    inputs: list[tuple[str, tuple[int | str, ...]]] = field(default_factory=list)
    outputs: list[tuple[str, tuple[int | str, ...]]] = field(default_factory=list)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    nodes: list[tuple[str, list[str], list[str], dict[str, int]]] = field(default_factory=list)

    def node(self, op: str, inputs: list[str], output: str, **int_attributes: int) -> str:
        self.nodes.append((op, inputs, [output], int_attributes))
        return output

    def const(self, name: str, value: np.ndarray) -> str:
        self.weights[name] = np.asarray(value, np.float32)
        return name

    def encode(self) -> bytes:
        """GraphProto: node=1, name=2, initializer=5, input=11, output=12."""
        body = b""
        for index, (op, inputs, outputs, attributes) in enumerate(self.nodes):
            node = b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs)
            node += _str(3, f"{op.lower()}_{index}") + _str(4, op)
            for attr_name, value in attributes.items():
                # AttributeProto: name=1, i=3, type=20
                node += _bytes(5, _str(1, attr_name) + _int(3, value) + _int(20, _ATTR_INT))
            body += _bytes(1, node)
        body += _str(2, self.name)
        for name, value in self.weights.items():
            body += _bytes(5, _tensor(name, value))
        for name, shape in self.inputs:
            body += _bytes(11, _value_info(name, shape))
        for name, shape in self.outputs:
            body += _bytes(12, _value_info(name, shape))
        return body


def model_bytes(graph: Graph, metadata: dict[str, str], producer: str = "postselectd") -> bytes:
    """ModelProto: ir_version=1, producer_name=2, graph=7, opset_import=8, metadata_props=14."""
    body = _int(1, IR_VERSION) + _str(2, producer) + _bytes(7, graph.encode())
    body += _bytes(8, _str(1, "") + _int(2, OPSET))
    for key, value in metadata.items():
        body += _bytes(14, _str(1, key) + _str(2, value))
    return body
