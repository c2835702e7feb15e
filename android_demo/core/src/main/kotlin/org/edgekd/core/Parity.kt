package org.edgekd.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/** What the model under test takes and gives, as its runtime reports it. */
data class TensorInfo(val dtype: String, val shape: List<Int>, val quantization: Quantization?)

/**
 * The device side of the parity protocol: run every sample of an EKDT inputs file through a model,
 * one batch-1 call each, and return an EKDT outputs file (raw output tensors, with the output's
 * quantization in the header so the host can dequantize). [invoke] fills the output buffer from the
 * input buffer; both are direct, native order (little-endian on every Android ABI).
 */
class ParityRunner(private val input: TensorInfo, private val output: TensorInfo, private val kind: String = "logits") {
    fun run(inputsFile: ByteArray, source: String, invoke: (ByteBuffer, ByteBuffer) -> Unit): ByteArray {
        val t = Ekdt.decode(inputsFile, source)
        if (t.dtype != input.dtype) throw IllegalArgumentException("$source: inputs are ${t.dtype}, the model takes ${input.dtype}")
        if (t.shape.drop(1) != input.shape.drop(1)) {
            throw IllegalArgumentException("$source: sample shape ${t.shape.drop(1)}, the model takes ${input.shape.drop(1)}")
        }
        checkQuantization(t, source)
        val inBuf = ByteBuffer.allocateDirect(t.sampleBytes).order(ByteOrder.nativeOrder())
        val outSize = output.shape.fold(1) { a, b -> a * b }
        val outBytes = outSize * (Ekdt.DTYPE_SIZES[output.dtype] ?: throw IllegalArgumentException("output dtype ${output.dtype}"))
        val outBuf = ByteBuffer.allocateDirect(outBytes).order(ByteOrder.nativeOrder())
        val result = ByteArray(t.samples * outBytes)
        for (i in 0 until t.samples) {
            inBuf.clear()
            inBuf.put(toNative(t.sample(i), t.dtype))
            inBuf.rewind()
            outBuf.clear()
            invoke(inBuf, outBuf)
            outBuf.rewind()
            val raw = ByteArray(outBytes)
            outBuf.get(raw)
            System.arraycopy(toLittle(raw, output.dtype), 0, result, i * outBytes, outBytes)
        }
        val quant = output.quantization?.let { mapOf("scale" to it.scale, "zero_point" to it.zeroPoint) }
        val header = mapOf("kind" to kind, "layout" to null, "quantization" to quant)
        return Ekdt.encode(result, output.dtype, listOf(t.samples, outSize), header)
    }

    private fun checkQuantization(t: EkdtTensor, source: String) {
        val want = input.quantization ?: return
        @Suppress("UNCHECKED_CAST")
        val got = t.header["quantization"] as? Map<String, Any?> ?: return
        val scale = got["scale"] as? Double
        val zp = (got["zero_point"] as? Double)?.toInt()
        // The model stores its scale in float32; the host may send it as float64.
        if (scale == null || scale.toFloat() != want.scale.toFloat() || zp != want.zeroPoint) {
            throw IllegalArgumentException("$source: inputs quantized with $got, the model takes $want")
        }
    }

    private fun toNative(le: ByteArray, dtype: String): ByteArray = swapIfNeeded(le, dtype)

    private fun toLittle(native: ByteArray, dtype: String): ByteArray = swapIfNeeded(native, dtype)

    private fun swapIfNeeded(b: ByteArray, dtype: String): ByteArray {
        val n = Ekdt.DTYPE_SIZES.getValue(dtype)
        if (n == 1 || ByteOrder.nativeOrder() == ByteOrder.LITTLE_ENDIAN) return b
        val out = b.copyOf()
        for (i in out.indices step n) for (k in 0 until n) out[i + k] = b[i + n - 1 - k]
        return out
    }
}
