"""gguf_io.py — a small GGUF v3 writer and reader in pure Python (struct only).

Used by generate.py to write the fixtures gemmad loads, and by refmodel.py to read
them back. Only what the fixtures need: scalar/string/array metadata, tensors of type
F32, F16 and BF16 with data given as little-endian bytes.
"""

import struct

# metadata value types (GGUF spec)
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)

# ggml tensor type ids
T_F32, T_F16, T_BF16 = 0, 1, 30
T_SIZE = {T_F32: 4, T_F16: 2, T_BF16: 2}

_SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
               F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}

ALIGN = 32


def _str(s):
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


class Writer:
    def __init__(self):
        self.kv = []        # (key, bytes of type + value)
        self.tensors = []   # (name, ne (ggml order), type, data bytes)

    def _add(self, key, vtype, payload):
        if any(k == key for k, _ in self.kv):
            raise ValueError("duplicate key " + key)
        self.kv.append((key, struct.pack("<I", vtype) + payload))

    def u32(self, key, v):
        self._add(key, U32, struct.pack("<I", int(v)))

    def i32(self, key, v):
        self._add(key, I32, struct.pack("<i", int(v)))

    def f32(self, key, v):
        self._add(key, F32, struct.pack("<f", float(v)))

    def boolean(self, key, v):
        self._add(key, BOOL, struct.pack("<?", bool(v)))

    def string(self, key, v):
        self._add(key, STR, _str(v))

    def array(self, key, etype, values):
        values = list(values)
        head = struct.pack("<IQ", etype, len(values))
        if etype == STR:
            body = b"".join(_str(v) for v in values)
        else:
            fmt = _SCALAR_FMT[etype]
            body = b"".join(struct.pack(fmt, v) for v in values)
        self._add(key, ARR, head + body)

    def tensor(self, name, ne, ttype, data):
        """ne in ggml order (ne[0] contiguous); data: little-endian bytes."""
        n = 1
        for d in ne:
            n *= int(d)
        if len(data) != n * T_SIZE[ttype]:
            raise ValueError("tensor %s: %d bytes for %s elements of type %d" % (name, len(data), ne, ttype))
        if any(t[0] == name for t in self.tensors):
            raise ValueError("duplicate tensor " + name)
        self.tensors.append((name, [int(d) for d in ne], ttype, bytes(data)))

    def write(self, path):
        out = bytearray()
        out += b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv))
        for key, payload in self.kv:
            out += _str(key) + payload
        offset = 0
        offsets = []
        for name, ne, ttype, data in self.tensors:
            offsets.append(offset)
            out += _str(name) + struct.pack("<I", len(ne))
            out += b"".join(struct.pack("<Q", d) for d in ne)
            out += struct.pack("<IQ", ttype, offset)
            offset += len(data)
            offset += (-offset) % ALIGN
        out += b"\0" * ((-len(out)) % ALIGN)
        for (name, ne, ttype, data), off in zip(self.tensors, offsets):
            assert len(out) % ALIGN == 0
            out += data
            out += b"\0" * ((-len(out)) % ALIGN)
        with open(path, "wb") as f:
            f.write(out)
        return len(out)


class Reader:
    """Parses a whole GGUF file into .kv (key -> python value) and .tensors
    (name -> (ne, type, bytes))."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf = f.read()
        self.pos = 0
        magic = self.buf[:4]
        if magic != b"GGUF":
            raise ValueError(path + ": not a GGUF file")
        self.pos = 4
        version, n_t, n_kv = self._unpack("<IQQ")
        if version not in (2, 3):
            raise ValueError(path + ": GGUF version %d" % version)
        self.kv = {}
        for _ in range(n_kv):
            key = self._string()
            (vtype,) = self._unpack("<I")
            self.kv[key] = self._value(vtype)
        infos = []
        for _ in range(n_t):
            name = self._string()
            (nd,) = self._unpack("<I")
            ne = list(self._unpack("<" + "Q" * nd))
            ttype, off = self._unpack("<IQ")
            infos.append((name, ne, ttype, off))
        align = int(self.kv.get("general.alignment", ALIGN))
        data0 = self.pos + ((-self.pos) % align)
        self.tensors = {}
        for name, ne, ttype, off in infos:
            n = 1
            for d in ne:
                n *= d
            start = data0 + off
            self.tensors[name] = (ne, ttype, self.buf[start:start + n * T_SIZE[ttype]])

    def _unpack(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def _string(self):
        (n,) = self._unpack("<Q")
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8")

    def _value(self, vtype):
        if vtype == STR:
            return self._string()
        if vtype == ARR:
            etype, n = self._unpack("<IQ")
            return [self._value(etype) for _ in range(n)]
        (v,) = self._unpack(_SCALAR_FMT[vtype])
        return v

    def floats(self, name):
        """Tensor data as a flat list of Python floats (row-major, ggml order)."""
        ne, ttype, data = self.tensors[name]
        n = len(data) // T_SIZE[ttype]
        if ttype == T_F32:
            return list(struct.unpack("<%df" % n, data))
        if ttype == T_F16:
            return list(struct.unpack("<%de" % n, data))
        if ttype == T_BF16:
            raw = struct.unpack("<%dH" % n, data)
            packed = struct.pack("<%dI" % n, *[h << 16 for h in raw])
            return list(struct.unpack("<%df" % n, packed))
        raise ValueError("tensor %s: type %d not supported here" % (name, ttype))

    def matrix(self, name):
        """A 2-D tensor {ne0, ne1} as ne1 rows of ne0 floats (PyTorch [out, in])."""
        ne, _, _ = self.tensors[name]
        flat = self.floats(name)
        cols = ne[0]
        return [flat[i * cols:(i + 1) * cols] for i in range(len(flat) // cols)]
