package org.edgekd.core

/**
 * A port of kd_core/data/transforms.py (resize_uint8 + normalize) and of the int8 input
 * quantization of docs/MANIFEST.md. tests/test_kotlin_core.py holds it to the Python code: resized
 * pixels exact, float tensors within 1e-5 (in practice bit-equal), int8 tensors exact.
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

/** An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B (unsigned bytes). */
class RgbImage(val width: Int, val height: Int, val pixels: ByteArray) {
    init {
        require(width > 0 && height > 0) { "empty image ${width}x$height" }
        require(pixels.size == width * height * 3) { "expected ${width * height * 3} bytes, got ${pixels.size}" }
    }

    operator fun get(y: Int, x: Int, c: Int): Int = pixels[(y * width + x) * 3 + c].toInt() and 0xFF

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

        /** From RGBA bytes in memory order (Android Bitmap ARGB_8888 copyPixelsToBuffer). */
        fun fromRgba(width: Int, height: Int, rgba: ByteArray): RgbImage {
            require(rgba.size == width * height * 4) { "expected ${width * height * 4} RGBA bytes, got ${rgba.size}" }
            val out = ByteArray(width * height * 3)
            for (i in 0 until width * height) {
                out[3 * i] = rgba[4 * i]
                out[3 * i + 1] = rgba[4 * i + 1]
                out[3 * i + 2] = rgba[4 * i + 2]
            }
            return RgbImage(width, height, out)
        }
    }
}

/** One output sample of the triangle filter: input indices [lo, lo + weights.size). */
class Taps(val lo: Int, val weights: DoubleArray)

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
     * How a pass sums its taps. transforms.resize_uint8 sums them left to right as
     * acc = acc + w * x, each step rounded twice: [SEPARATE], the default. [FUSED]
     * (acc = fma(x, w, acc)) is kept for comparison with BLAS-based resizers.
     */
    enum class Accumulation { FUSED, SEPARATE }

    val DEFAULT_ACCUMULATION = Accumulation.SEPARATE

    /** transforms.resize_uint8: horizontal pass, vertical pass (float64), round half up, clip. */
    fun resizeUint8(
        image: RgbImage,
        size: Int,
        rule: ResizeRule,
        accumulation: Accumulation = DEFAULT_ACCUMULATION,
    ): RgbImage {
        val h = image.height
        val w = image.width
        val (newH, newW) = resizedShape(h, w, size, rule)
        val wy = taps(h, newH, (newH - size) / 2, size)
        val wx = taps(w, newW, (newW - size) / 2, size)
        val fused = accumulation == Accumulation.FUSED
        val horiz = DoubleArray(h * size * 3) // [y][ox][c]
        for (y in 0 until h) {
            for (ox in 0 until size) {
                val t = wx[ox]
                for (c in 0 until 3) {
                    var acc = 0.0
                    for (k in t.weights.indices) {
                        val x = image[y, t.lo + k, c].toDouble()
                        acc = if (fused) Fma.fma(x, t.weights[k], acc) else acc + x * t.weights[k]
                    }
                    horiz[(y * size + ox) * 3 + c] = acc
                }
            }
        }
        val out = ByteArray(size * size * 3)
        for (oy in 0 until size) {
            val t = wy[oy]
            for (ox in 0 until size) {
                for (c in 0 until 3) {
                    var acc = 0.0
                    for (k in t.weights.indices) {
                        val x = horiz[((t.lo + k) * size + ox) * 3 + c]
                        acc = if (fused) Fma.fma(t.weights[k], x, acc) else acc + t.weights[k] * x
                    }
                    out[(oy * size + ox) * 3 + c] = Math.floor(acc + 0.5).coerceIn(0.0, 255.0).toInt().toByte()
                }
            }
        }
        return RgbImage(size, size, out)
    }
}

/**
 * Fused multiply-add, rounded once: java.lang.Math.fma where the platform has it (JVM 9+, Android
 * API 33+), otherwise an exact emulation in plain double arithmetic (Boldo and Melquiond,
 * "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to odd", 2008),
 * valid away from overflow and underflow, which pixel values and filter weights never reach.
 */
object Fma {
    private val native: Boolean = try {
        Math.fma(2.0, 3.0, 1.0) == 7.0
    } catch (e: LinkageError) {
        false // NoSuchMethodError on Android before API 33
    }

    fun fma(a: Double, b: Double, c: Double): Double = if (native) Math.fma(a, b, c) else emulated(a, b, c)

    fun emulated(a: Double, b: Double, c: Double): Double {
        val ph = a * b
        val pl = productError(a, b, ph) // a * b == ph + pl exactly
        val sh = c + ph
        val sl = sumError(c, ph, sh) // c + ph == sh + sl exactly
        return sh + addRoundToOdd(sl, pl)
    }

    private const val SPLITTER = 134217729.0 // 2^27 + 1 (Veltkamp)

    private fun productError(a: Double, b: Double, p: Double): Double {
        val ta = SPLITTER * a
        val ahi = ta - (ta - a)
        val alo = a - ahi
        val tb = SPLITTER * b
        val bhi = tb - (tb - b)
        val blo = b - bhi
        return ((ahi * bhi - p) + ahi * blo + alo * bhi) + alo * blo
    }

    private fun sumError(a: Double, b: Double, s: Double): Double {
        val bb = s - a
        return (a - (s - bb)) + (b - bb)
    }

    /** x + y rounded to odd: if inexact, the neighbour of the exact sum with an odd last bit. */
    private fun addRoundToOdd(x: Double, y: Double): Double {
        val s = x + y
        val e = sumError(x, y, s)
        if (e == 0.0 || (java.lang.Double.doubleToRawLongBits(s) and 1L) == 1L) return s
        return if (e > 0.0) Math.nextUp(s) else Math.nextDown(s)
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
