package org.edgekd.core

import java.io.DataInputStream
import java.io.EOFException
import java.io.InputStream

/** An image the app will not classify; the message names the file and the problem (as Python's). */
class ImageRefused(message: String) : IllegalArgumentException(message)

/** The file's format and what Python's PIL calls its pixels (`Image.mode`), from the header alone. */
data class ImageKind(val format: String, val mode: String)

/**
 * The image checks of kd_core.data.transforms.load_rgb, before any pixel is decoded: only plain RGB
 * is classified; greyscale, palette, CMYK and images with an alpha channel are refused with Python's
 * wording ("image is greyscale (L), expected RGB"). Android's decoder would turn all of them into
 * RGBA pixels and classify them; the host refuses them, so the app does too. The mode is read from
 * the header as PIL reads it: PNG's IHDR colour type, JPEG's component count, WebP's alpha flag,
 * BMP's bit depth and masks; GIF is always palette.
 */
object ImageKinds {
    val DESCRIPTIONS = mapOf(
        "L" to "greyscale", "LA" to "greyscale with alpha", "CMYK" to "CMYK",
        "RGBA" to "RGB with an alpha channel", "P" to "palette", "I;16" to "16-bit",
    )
    const val FORMATS = "JPEG, PNG, WebP or BMP"

    /** Refuse anything but plain RGB; returns the kind. */
    fun requireRgb(input: InputStream, source: String): ImageKind {
        val kind = sniff(input, source)
        if (kind.mode != "RGB") {
            val what = DESCRIPTIONS[kind.mode] ?: kind.mode
            throw ImageRefused("$source: image is $what (${kind.mode}), expected RGB")
        }
        return kind
    }

    fun sniff(input: InputStream, source: String): ImageKind {
        val s = DataInputStream(input.buffered())
        val head = ByteArray(12)
        var n = 0
        while (n < head.size) {
            val k = s.read(head, n, head.size - n)
            if (k < 0) break
            n += k
        }
        try {
            return when {
                n >= 8 && head.startsWith(0x89, 'P'.code, 'N'.code, 'G'.code) -> png(head, s)
                n >= 3 && head.startsWith(0xFF, 0xD8, 0xFF) -> jpeg(head, s)
                n >= 12 && head.startsWith('R'.code, 'I'.code, 'F'.code, 'F'.code) && String(head, 8, 4) == "WEBP" -> webp(s)
                n >= 6 && String(head, 0, 4) == "GIF8" -> ImageKind("GIF", "P")
                n >= 12 && head.startsWith('B'.code, 'M'.code) -> bmp(s)
                else -> throw ImageRefused("$source: not a $FORMATS image")
            }
        } catch (e: EOFException) {
            throw ImageRefused("$source: truncated image header")
        }
    }

    private fun ByteArray.startsWith(vararg b: Int): Boolean = b.indices.all { this[it] == b[it].toByte() }

    private fun u8(b: ByteArray, i: Int): Int = b[i].toInt() and 0xFF

    private fun png(head: ByteArray, s: DataInputStream): ImageKind {
        // bytes 8..15: IHDR length and type; then width, height, bit depth, colour type.
        val ihdr = ByteArray(14)
        s.readFully(ihdr, 0, 14) // head held 12 of the 16 signature+chunk-header bytes
        val depth = u8(ihdr, 12)
        val mode = when (u8(ihdr, 13)) {
            0 -> when (depth) { 1 -> "1"; 16 -> "I;16"; else -> "L" }
            2 -> "RGB"
            3 -> "P"
            4 -> "LA"
            6 -> "RGBA"
            else -> "unknown PNG colour type ${u8(ihdr, 13)}"
        }
        return ImageKind("PNG", mode)
    }

    private fun jpeg(head: ByteArray, s: DataInputStream): ImageKind {
        // Walk the marker segments (head holds FF D8 FF and 9 more bytes) to the first SOFn.
        val rest = java.io.SequenceInputStream(head.copyOfRange(3, 12).inputStream(), s)
        val d = DataInputStream(rest)
        var marker = 0xFF
        while (true) {
            var m = d.readUnsignedByte()
            if (marker == 0xFF) {
                while (m == 0xFF) m = d.readUnsignedByte()
            }
            if (m in 0xC0..0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
                d.readUnsignedShort() // segment length
                d.readUnsignedByte() // precision
                d.readUnsignedShort() // height
                d.readUnsignedShort() // width
                val mode = when (val components = d.readUnsignedByte()) {
                    1 -> "L"
                    3 -> "RGB"
                    4 -> "CMYK"
                    else -> "$components-component JPEG"
                }
                return ImageKind("JPEG", mode)
            }
            if (m == 0xD9 || m == 0xDA) return ImageKind("JPEG", "JPEG without a frame header")
            if (m !in 0xD0..0xD8 && m != 0x01) d.skipFully(d.readUnsignedShort() - 2)
            marker = d.readUnsignedByte()
            if (marker != 0xFF) return ImageKind("JPEG", "damaged JPEG")
        }
    }

    private fun DataInputStream.skipFully(n: Int) {
        var left = n
        while (left > 0) {
            val k = skipBytes(left)
            if (k <= 0) throw EOFException()
            left -= k
        }
    }

    private fun webp(s: DataInputStream): ImageKind {
        val chunk = ByteArray(4).also { s.readFully(it) }
        s.readInt() // chunk size
        val mode = when (String(chunk, Charsets.US_ASCII)) {
            "VP8 " -> "RGB"
            "VP8L" -> {
                s.readUnsignedByte() // signature 0x2F
                val bits = Integer.reverseBytes(s.readInt()) // 14 + 14 bits of size, then alpha_is_used
                if ((bits ushr 28) and 1 == 1) "RGBA" else "RGB"
            }
            "VP8X" -> if (s.readUnsignedByte() and 0x10 != 0) "RGBA" else "RGB"
            else -> "unknown WebP chunk"
        }
        return ImageKind("WebP", mode)
    }

    private fun bmp(s: DataInputStream): ImageKind {
        // 14-byte file header (head held 12 of them), then the DIB header: its size, width, height,
        // planes, bit count, compression, ...; v4/v5 headers hold the RGBA masks at 40..55.
        s.skipFully(2)
        val dib = ByteArray(56)
        s.readFully(dib, 0, 16)
        fun le(i: Int, n: Int): Long = (0 until n).fold(0L) { a, k -> a or ((dib[i + k].toLong() and 0xFF) shl (8 * k)) }
        val size = le(0, 4).toInt()
        val bits = le(if (size == 12) 10 else 14, 2).toInt()
        var compression = 0
        var alphaMask = 0L
        if (size >= 40) {
            s.readFully(dib, 16, 4)
            compression = le(16, 4).toInt()
            if (size >= 56 && compression == 3) { // BI_BITFIELDS with an alpha mask in the header
                s.readFully(dib, 20, 36)
                alphaMask = le(52, 4)
            }
        }
        val mode = when {
            bits <= 8 -> "P"
            alphaMask != 0L -> "RGBA"
            else -> "RGB"
        }
        return ImageKind("BMP", mode)
    }
}

/**
 * How the app decodes a photo. Full resolution ([sampleSize] 1) keeps the model input bit-exact with
 * the host's, and the core resizes straight from the decoded pixels, row by row, without another
 * full-resolution copy (Resize.resizeUint8 on a [PixelSource]). Only a photo over [MAX_PIXELS] is
 * decoded at 1/2, 1/4, ... resolution (BitmapFactory's inSampleSize), which keeps memory bounded at
 * the cost of exact parity (the app says so). The photo on screen is a copy of at most
 * [DISPLAY_SIDE] pixels a side.
 */
object DecodePlan {
    const val MAX_PIXELS = 4096L * 4096L
    const val DISPLAY_SIDE = 2048

    fun sampleSize(width: Int, height: Int, maxPixels: Long = MAX_PIXELS): Int {
        require(width > 0 && height > 0) { "image size ${width}x$height" }
        var s = 1
        while (ceilDiv(width, s).toLong() * ceilDiv(height, s) > maxPixels) s *= 2
        return s
    }

    /** The on-screen copy's size: the longest side at most [maxSide], aspect ratio kept. */
    fun displaySize(width: Int, height: Int, maxSide: Int = DISPLAY_SIDE): Pair<Int, Int> {
        val longest = maxOf(width, height)
        if (longest <= maxSide) return Pair(width, height)
        return Pair(maxOf(1, (width.toLong() * maxSide / longest).toInt()), maxOf(1, (height.toLong() * maxSide / longest).toInt()))
    }

    private fun ceilDiv(a: Int, b: Int): Int = (a + b - 1) / b
}
