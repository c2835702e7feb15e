package org.edgekd.core

/**
 * A port of kd_core/data/transforms.py (resize_uint8 + normalize) and of the int8 input
 * quantization of docs/MANIFEST.md. tests/test_kotlin_core.py holds it to the Python code: resized
 * pixels exact, float tensors within 1e-5 (in practice bit-equal), int8 tensors exact. No fused
 * multiply-add anywhere: every sum is a separate multiply and add, as numpy computes it.
 */
enum class ResizeRule(val id: String) {
    SQUASH("squash"),
    CENTER_CROP("center_crop");

    companion object {
        fun of(id: String): ResizeRule =
            entries.firstOrNull { it.id == id } ?: throw ManifestException("unknown resize rule \"$id\"")
    }
}

enum class Layout {
    NHWC,
    NCHW;

    companion object {
        fun of(id: String): Layout =
            entries.firstOrNull { it.name == id } ?: throw ManifestException("unknown layout \"$id\"")
    }
}

/**
 * Pixels read one row at a time: a decoded photo is read where it lies (an Android Bitmap's
 * buffer, a test array), never copied whole. [readRow] fills `out` with the row's 8-bit R, G, B
 * values interleaved (3 x [width] bytes) and refuses a pixel that is not opaque.
 */
interface PixelSource {
    val width: Int
    val height: Int

    fun readRow(y: Int, out: ByteArray)
}

/** An 8-bit RGB image in memory, rows top to bottom, pixels interleaved R, G, B (unsigned bytes). */
class RgbImage(override val width: Int, override val height: Int, val pixels: ByteArray) : PixelSource {
    init {
        require(width > 0 && height > 0) { "empty image ${width}x$height" }
        require(pixels.size == width * height * 3) { "expected ${width * height * 3} bytes, got ${pixels.size}" }
    }

    operator fun get(y: Int, x: Int, c: Int): Int = pixels[(y * width + x) * 3 + c].toInt() and 0xFF

    override fun readRow(y: Int, out: ByteArray) = System.arraycopy(pixels, y * width * 3, out, 0, width * 3)

    companion object {
        /** From packed 0xAARRGGBB ints (java.awt BufferedImage.getRGB); alpha is dropped. */
        fun fromArgb(width: Int, height: Int, argb: IntArray): RgbImage {
            val out = ByteArray(width * height * 3)
            for (i in 0 until width * height) {
                val p = argb[i]
                out[3 * i] = (p shr 16).toByte()
                out[3 * i + 1] = (p shr 8).toByte()
                out[3 * i + 2] = p.toByte()
            }
            return RgbImage(width, height, out)
        }
    }
}

/**
 * RGBA bytes in memory order, [rowBytes] apart: what Android's Bitmap.copyPixelsToBuffer writes
 * for an ARGB_8888 bitmap (raw decoded values: no colour-space conversion, as PIL's load_rgb).
 * Read in place; a pixel whose alpha is not 255 is refused (the host would ignore its alpha).
 */
class RgbaBufferSource(
    override val width: Int,
    override val height: Int,
    private val buffer: java.nio.ByteBuffer,
    private val rowBytes: Int = width * 4,
    private val source: String = "image",
) : PixelSource {
    private val row = ByteArray(width * 4)

    init {
        require(width > 0 && height > 0 && rowBytes >= width * 4) { "bad image geometry ${width}x$height, $rowBytes" }
        require(buffer.capacity().toLong() >= rowBytes.toLong() * (height - 1) + width * 4) { "buffer too small" }
    }

    override fun readRow(y: Int, out: ByteArray) {
        val b = buffer.duplicate()
        b.position(y * rowBytes)
        b.get(row)
        for (x in 0 until width) {
            if (row[4 * x + 3] != 0xFF.toByte()) throw ImageRefused("$source: image has transparent pixels; expected plain RGB")
            out[3 * x] = row[4 * x]
            out[3 * x + 1] = row[4 * x + 1]
            out[3 * x + 2] = row[4 * x + 2]
        }
    }
}

/** One output sample of the triangle filter: input indices [lo, lo + weights.size). */
class Taps(val lo: Int, val weights: DoubleArray) {
    val hi: Int get() = lo + weights.size
}

object Resize {
    /** Rows [first, first + count) of transforms._aa_weights(inSize, outSize), nonzero span only. */
    fun taps(inSize: Int, outSize: Int, first: Int = 0, count: Int = outSize): Array<Taps> {
        val scale = inSize.toDouble() / outSize.toDouble()
        val support = if (scale >= 1.0) scale else 1.0
        val invscale = if (scale >= 1.0) 1.0 / scale else 1.0
        return Array(count) { k ->
            val i = first + k
            val center = scale * (i + 0.5)
            val lo = maxOf((center - support + 0.5).toInt(), 0) // Python int(): truncation toward zero
            val hi = minOf((center + support + 0.5).toInt(), inSize)
            val w = DoubleArray(hi - lo) { t -> maxOf(1.0 - Math.abs(((lo + t) - center + 0.5) * invscale), 0.0) }
            var total = 0.0 // left to right, as transforms._taps
            for (v in w) total += v
            Taps(lo, DoubleArray(w.size) { t -> w[t] / total })
        }
    }

    /** transforms.resized_shape: (height, width) before the crop. */
    fun resizedShape(height: Int, width: Int, size: Int, rule: ResizeRule): Pair<Int, Int> = when {
        rule == ResizeRule.SQUASH -> Pair(size, size)
        height <= width -> Pair(size, (size.toDouble() * width / height).toInt())
        else -> Pair((size.toDouble() * height / width).toInt(), size)
    }

    /**
     * transforms.resize_uint8, streamed: each input row the crop needs is read once, filtered
     * horizontally (float64, taps summed left to right as acc = acc + x * w), and added into the
     * output rows whose vertical taps cover it, in ascending input order (acc = acc + w * h):
     * exactly the Python sums, in the same order, without holding the image or its horizontal pass.
     * Memory: one input row and size x size x 3 accumulators, whatever the photo's size.
     */
    fun resizeUint8(image: PixelSource, size: Int, rule: ResizeRule): RgbImage {
        val h = image.height
        val w = image.width
        val (newH, newW) = resizedShape(h, w, size, rule)
        val wy = taps(h, newH, (newH - size) / 2, size)
        val wx = taps(w, newW, (newW - size) / 2, size)
        val row = ByteArray(w * 3)
        val horiz = DoubleArray(size * 3)
        val acc = DoubleArray(size * size * 3)
        var firstOpen = 0 // the first output row whose taps reach the current input row or beyond
        for (y in wy[0].lo until wy[size - 1].hi) {
            while (wy[firstOpen].hi <= y) firstOpen++
            if (wy[firstOpen].lo > y) continue // a row no output row uses
            image.readRow(y, row)
            horizontal(row, wx, horiz)
            var oy = firstOpen
            while (oy < size && wy[oy].lo <= y) {
                val t = wy[oy]
                if (y < t.hi) {
                    val wk = t.weights[y - t.lo]
                    val base = oy * size * 3
                    for (i in 0 until size * 3) acc[base + i] = acc[base + i] + wk * horiz[i]
                }
                oy++
            }
        }
        val out = ByteArray(size * size * 3) { Math.floor(acc[it] + 0.5).coerceIn(0.0, 255.0).toInt().toByte() }
        return RgbImage(size, size, out)
    }

    private fun horizontal(row: ByteArray, wx: Array<Taps>, out: DoubleArray) {
        for (ox in wx.indices) {
            val t = wx[ox]
            for (c in 0 until 3) {
                var acc = 0.0
                for (k in t.weights.indices) {
                    val x = (row[(t.lo + k) * 3 + c].toInt() and 0xFF).toDouble()
                    acc = acc + x * t.weights[k]
                }
                out[ox * 3 + c] = acc
            }
        }
    }
}

object Normalize {
    /** transforms.normalize in float32: (pixel / 255 - mean) / std, in [layout] order (batch of 1). */
    fun normalize(image: RgbImage, mean: List<Double>, std: List<Double>, layout: Layout): FloatArray {
        val m = FloatArray(3) { mean[it].toFloat() }
        val s = FloatArray(3) { std[it].toFloat() }
        val hw = image.width * image.height
        val out = FloatArray(hw * 3)
        for (i in 0 until hw) {
            for (c in 0 until 3) {
                val v = (image.pixels[3 * i + c].toInt() and 0xFF).toFloat() / 255f
                val x = (v - m[c]) / s[c]
                out[if (layout == Layout.NHWC) 3 * i + c else c * hw + i] = x
            }
        }
        return out
    }

    /**
     * int8 input quantization: q = clamp(round(x / scale) + zero_point, -128, 127), with x / scale in
     * float32 and round half to even (numpy's np.round on a float32 array; Kotlin's Math.rint).
     */
    fun quantizeInt8(x: FloatArray, q: Quantization): ByteArray {
        val scale = q.scale.toFloat()
        return ByteArray(x.size) { i ->
            (Math.rint((x[i] / scale).toDouble()) + q.zeroPoint).coerceIn(-128.0, 127.0).toInt().toByte()
        }
    }
}

/** numpy's float64 sum (np.add.reduce on a contiguous array): 0.0 + pairwise sum, blocks of 8. */
object NumpySum {
    fun sum(a: DoubleArray): Double = 0.0 + pairwise(a, 0, a.size)

    private fun pairwise(a: DoubleArray, start: Int, n: Int): Double {
        if (n < 8) {
            var res = 0.0
            for (i in 0 until n) res += a[start + i]
            return res
        }
        if (n <= 128) {
            val r = DoubleArray(8) { a[start + it] }
            var i = 8
            while (i < n - n % 8) {
                for (j in 0 until 8) r[j] += a[start + i + j]
                i += 8
            }
            var res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
            while (i < n) res += a[start + i++]
            return res
        }
        var n2 = n / 2
        n2 -= n2 % 8
        return pairwise(a, start, n2) + pairwise(a, start + n2, n - n2)
    }
}
