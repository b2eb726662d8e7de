#!/usr/bin/env python3
"""Regenerates the image-decode test files (see README.md). PNGs are written by this
script's own encoder from a known pattern, so the expected RGB (Pillow's .convert("RGB")
rules) is exact; JPEGs are encoded by ImageMagick and their expected RGB is ImageMagick's
own libjpeg decode. Run from this directory with ImageMagick 6 (/usr/bin/convert)."""
import struct, subprocess, zlib

W, H = 13, 9
CONVERT = "/usr/bin/convert"


def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)


def pack_row(samples, depth):
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    if depth == 8:
        return bytes(samples)
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(samples), per):
        b = 0
        grp = samples[i:i + per]
        for j, s in enumerate(grp):
            b |= s << (8 - depth * (j + 1))
        out.append(b)
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png(px, ct, depth, plte=None, trns=None, interlace=False, exif=None, exif_after=False, itxt=None):
    """px: rows of pixels, each pixel a tuple of samples."""
    h, w = len(px), len(px[0])
    raw = bytearray()
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            for y in range(y0, h, dy):
                row = [s for x in range(x0, w, dx) for s in px[y][x]]
                if row:
                    raw += b"\0" + pack_row(row, depth)
    else:
        for y in range(h):
            raw += b"\0" + pack_row([s for p in px[y] for s in p], depth)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ct, 0, 0, int(interlace)))
    out += chunk(b"gAMA", struct.pack(">I", 100000))   # ignored by Pillow: must not change pixels
    if plte:
        out += chunk(b"PLTE", b"".join(bytes(c) for c in plte))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    if exif and not exif_after:
        out += chunk(b"eXIf", exif)
    if itxt:
        out += chunk(b"iTXt", itxt[0] + b"\0\0\0\0\0" + itxt[1])
    out += chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    if exif and exif_after:
        out += chunk(b"eXIf", exif)
    return out + chunk(b"IEND", b"")


def ppm(rgb_rows):
    h, w = len(rgb_rows), len(rgb_rows[0])
    return b"P6\n%d %d\n255\n" % (w, h) + bytes(c for r in rgb_rows for p in r for c in p)


def pat(x, y, c):
    return [(x * 37 + y * 11) & 255, (x * 5 + y * 53 + 7) & 255, (x * x + y * 3 + 90) & 255, (x * 19 + y * 29 + 3) & 255][c]


def pat16(x, y, c):
    return (pat(x, y, c) << 8) | ((x * 101 + y * 67 + c * 13) & 255)


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


def grid(f):
    return [[f(x, y) for x in range(W)] for y in range(H)]


def case(name, px, expect, **kw):
    write(name + ".png", png(px, **kw))
    write(name + ".expected.ppm", ppm(expect))


# greyscale 1/2/4/8/16
for d in (1, 2, 4, 8):
    m = (1 << d) - 1
    px = grid(lambda x, y: ((x * 3 + y * 5) % (m + 1),))
    exp = [[(p[0] * 255 // m,) * 3 for p in r] for r in px]
    case("grey%d" % d, px, exp, ct=0, depth=d)
case("grey8-trns", grid(lambda x, y: (pat(x, y, 0),)), grid(lambda x, y: (pat(x, y, 0),) * 3),
     ct=0, depth=8, trns=struct.pack(">H", pat(2, 2, 0)))
# 16-bit grey: Pillow's I;16 -> RGB clips at 255 (it does not take the high byte)
g16 = grid(lambda x, y: (pat16(x, y, 0) if (x + y) % 3 else pat(x, y, 1),))
case("grey16", g16, [[(min(p[0], 255),) * 3 for p in r] for r in g16], ct=0, depth=16)
case("grey16-adam7", g16, [[(min(p[0], 255),) * 3 for p in r] for r in g16], ct=0, depth=16, interlace=True)
# grey + alpha
case("greyalpha8", grid(lambda x, y: (pat(x, y, 0), pat(x, y, 3))), grid(lambda x, y: (pat(x, y, 0),) * 3), ct=4, depth=8)
case("greyalpha16", grid(lambda x, y: (pat16(x, y, 0), pat16(x, y, 3))), grid(lambda x, y: (pat(x, y, 0),) * 3), ct=4, depth=16)
# truecolour
rgb = grid(lambda x, y: tuple(pat(x, y, c) for c in range(3)))
case("rgb8", rgb, rgb, ct=2, depth=8)
case("rgb8-trns", rgb, rgb, ct=2, depth=8, trns=struct.pack(">HHH", *rgb[1][1]))
case("rgb8-adam7", rgb, rgb, ct=2, depth=8, interlace=True)
case("rgb16", grid(lambda x, y: tuple(pat16(x, y, c) for c in range(3))), rgb, ct=2, depth=16)
case("rgba8", grid(lambda x, y: tuple(pat(x, y, c) for c in range(4))), rgb, ct=6, depth=8)
case("rgba16", grid(lambda x, y: tuple(pat16(x, y, c) for c in range(4))), rgb, ct=6, depth=16)
case("rgba16-adam7", grid(lambda x, y: tuple(pat16(x, y, c) for c in range(4))), rgb, ct=6, depth=16, interlace=True)
# palette 1/2/4/8 (+ tRNS, + interlace)
for d in (1, 2, 4, 8):
    n = min(1 << d, 200)
    plte = [((i * 71) & 255, (i * 13 + 50) & 255, (255 - i * 7) & 255) for i in range(n)]
    px = grid(lambda x, y: ((x * 7 + y * 3) % n,))
    exp = [[plte[p[0]] for p in r] for r in px]
    case("pal%d" % d, px, exp, ct=3, depth=d, plte=plte)
    if d in (2, 8):
        case("pal%d-trns" % d, px, exp, ct=3, depth=d, plte=plte, trns=bytes((i * 40) & 255 for i in range(n // 2)))
    if d in (1, 4):
        case("pal%d-adam7" % d, px, exp, ct=3, depth=d, plte=plte, interlace=True)


# EXIF orientation: transforms written from ImageOps.exif_transpose's method table
def transform(rows, o):
    t = lambda r: [list(c) for c in zip(*r)]        # transpose
    if o == 2: return [r[::-1] for r in rows]       # FLIP_LEFT_RIGHT
    if o == 3: return [r[::-1] for r in rows[::-1]]  # ROTATE_180
    if o == 4: return rows[::-1]                    # FLIP_TOP_BOTTOM
    if o == 5: return t(rows)                       # TRANSPOSE
    if o == 6: return t(rows[::-1])                 # ROTATE_270 (clockwise)
    if o == 7: return [r[::-1] for r in t(rows)][::-1]  # TRANSVERSE
    if o == 8: return t(rows)[::-1] if False else [list(c) for c in zip(*rows)][::-1]  # ROTATE_90
    return rows


def tiff(o, be=True, typ=3):
    e = ">" if be else "<"
    val = {3: struct.pack(e + "HH", o, 0), 4: struct.pack(e + "I", o), 1: bytes((o, 0, 0, 0))}.get(typ)
    ifd = struct.pack(e + "H", 2 if val else 1) + struct.pack(e + "HHI", 0x010f, 2, 4) + b"ab\0\0"
    if val:
        ifd += struct.pack(e + "HHI", 0x0112, typ, 1) + val
    ifd += struct.pack(e + "I", 0)
    return (b"MM\0\x2a" if be else b"II\x2a\0") + struct.pack(e + "I", 8) + ifd


for o in range(1, 9):
    case("exif%d" % o, rgb, transform(rgb, o), ct=2, depth=8, exif=tiff(o, be=(o % 2 == 0), typ=3 if o < 7 else 4),
         exif_after=(o == 6))

# JPEGs from a smooth pattern (lossy: expected = ImageMagick's libjpeg decode)
JW, JH = 21, 14
src = [[((x * 12) & 255, (y * 18) & 255, (x * 5 + y * 7) & 255) for x in range(JW)] for y in range(JH)]
write("jsrc.ppm", ppm(src))


def im(*args):
    return subprocess.run([CONVERT, *args], check=True, capture_output=True).stdout


def read_ppm(b):
    parts = b.split(maxsplit=4)
    assert parts[0] == b"P6" and parts[3] == b"255"
    w, h = int(parts[1]), int(parts[2])
    d = parts[4]
    return [[tuple(d[(y * w + x) * 3:(y * w + x) * 3 + 3]) for x in range(w)] for y in range(h)]


im("jsrc.ppm", "-quality", "92", "-strip", "jpeg-baseline.jpg")
im("jsrc.ppm", "-quality", "92", "-strip", "-interlace", "JPEG", "jpeg-progressive.jpg")
im("jsrc.ppm", "-quality", "92", "-strip", "-colorspace", "Gray", "jpeg-grey.jpg")
for n in ("jpeg-baseline", "jpeg-progressive", "jpeg-grey"):
    write(n + ".expected.ppm", im(n + ".jpg", "-depth", "8", "ppm:-"))

base = open("jpeg-baseline.jpg", "rb").read()
base_px = read_ppm(open("jpeg-baseline.expected.ppm", "rb").read())
for o in range(1, 9):
    t = tiff(o, be=(o % 2 == 1))
    app1 = b"Exif\0\0" + t
    data = base[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + base[2:]
    write("jpeg-exif%d.jpg" % o, data)
    exp = transform(base_px, o)
    write("jpeg-exif%d.expected.ppm" % o, ppm(exp))
    # cross-check the transform table against ImageMagick's -auto-orient
    assert read_ppm(im("jpeg-exif%d.jpg" % o, "-auto-orient", "-depth", "8", "ppm:-")) == [[tuple(p) for p in r] for r in exp], o


def with_app1(payloads):
    out = base[:2]
    for p in payloads:
        out += b"\xff\xe1" + struct.pack(">H", len(p) + 2) + p
    return out + base[2:]


XMP = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><rdf:Description tiff:Orientation=\"%d\"/></x:xmpmeta>"
# XMP only: Pillow's getexif() fallback applies
write("jpeg-xmp8.jpg", with_app1([XMP % 8]))
write("jpeg-xmp8.expected.ppm", ppm(transform(base_px, 8)))
# EXIF without an orientation tag + XMP: the fallback applies
write("jpeg-exif-none-xmp5.jpg", with_app1([b"Exif\0\0" + tiff(0, typ=0), XMP % 5]))
write("jpeg-exif-none-xmp5.expected.ppm", ppm(transform(base_px, 5)))
# EXIF orientation 1 wins over XMP 6
write("jpeg-exif1-xmp6.jpg", with_app1([b"Exif\0\0" + tiff(1), XMP % 6]))
write("jpeg-exif1-xmp6.expected.ppm", ppm(base_px))
# orientation stored as BYTE: Pillow reads bytes, which match no method: untouched
write("jpeg-exif-byte6.jpg", with_app1([b"Exif\0\0" + tiff(6, typ=1)]))
write("jpeg-exif-byte6.expected.ppm", ppm(base_px))
# PNG: XMP in an iTXt chunk
case("xmp6", rgb, transform(rgb, 6), ct=2, depth=8,
     itxt=(b"XML:com.adobe.xmp", b"<x:xmpmeta><tiff:Orientation>6</tiff:Orientation></x:xmpmeta>"))
import os
os.remove("jsrc.ppm")
