# ROMFS images for the device tests, built here so both runtimes can (the host-side builder is
# tools/twtools/build.py build_romfs, with MicroPython's own VfsRomWriter; test_romfs_tools.py checks
# that both write the same bytes). Format: extmod/vfs_rom.c.
def _uint(v):
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.insert(0, 0x80 | (v & 0x7F))
        v >>= 7
    return bytes(out)


def _rec(kind, payload):
    return _uint(kind) + _uint(len(payload)) + payload


def file(name, data):
    name = name.encode()
    return _rec(5, _uint(len(name)) + name + _rec(2, data))


def folder(name, *records):
    name = name.encode()
    return _rec(4, _uint(len(name)) + name + b"".join(records))


def image(*records):
    body = b"".join(records)
    head = _uint(0x14A6B1)
    n = _uint(len(body))
    if (len(head) + len(n) + len(body)) % 2:
        n = b"\x80" + n  # a ROMFS is an even number of bytes: padded length
    return head + n + body


def app(version, extra=b""):
    """An app image as build_romfs makes them: the file "version" first, then the code."""
    return image(
        file("version", version.encode()),
        file("hello.py", b"def f():\n    return 42\n"),
        folder("pkg", file("__init__.py", b""), file("mod.py", b"X = 'in flash'\n" + extra)),
    )
