package org.edgekd.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/** What the model under test takes and gives, as its runtime reports it. */
data class TensorInfo(val dtype: String, val shape: List<Int>, val quantization: Quantization?)

/**
 * The device side of the parity protocol (docs/ANDROID_BENCHMARK.md): run every sample of a
 * safetensors inputs file (tensor "inputs", N x the model's input shape without its batch of 1)
 * through a model, one batch-1 call each, and return a safetensors outputs file (tensor "outputs",
 * N x C raw output values; metadata "kind" and, for int8 output, its "scale" and "zero_point" so
 * the host can dequantize). [invoke] fills the output buffer from the input buffer; both are
 * direct, native order (little-endian on every Android ABI).
 */
class ParityRunner(private val input: TensorInfo, private val output: TensorInfo, private val kind: String = "logits") {
    fun run(inputsFile: ByteArray, source: String, invoke: (ByteBuffer, ByteBuffer) -> Unit): ByteArray {
        val file = Safetensors.decode(inputsFile, source)
        val t = file.tensor(INPUTS, source)
        if (t.dtype != input.dtype) throw IllegalArgumentException("$source: inputs are ${t.dtype}, the model takes ${input.dtype}")
        if (t.shape.drop(1) != input.shape.drop(1)) {
            throw IllegalArgumentException("$source: sample shape ${t.shape.drop(1)}, the model takes ${input.shape.drop(1)}")
        }
        checkQuantization(file.metadata, source)
        val inBuf = ByteBuffer.allocateDirect(t.sampleBytes).order(ByteOrder.nativeOrder())
        val outSize = output.shape.fold(1) { a, b -> a * b }
        val item = Safetensors.SIZES[output.dtype] ?: throw IllegalArgumentException("output dtype ${output.dtype}")
        val outBytes = outSize * item
        val outBuf = ByteBuffer.allocateDirect(outBytes).order(ByteOrder.nativeOrder())
        val result = ByteArray(t.samples * outBytes)
        for (i in 0 until t.samples) {
            inBuf.clear()
            inBuf.put(swapIfNeeded(t.sample(i), t.dtype))
            inBuf.rewind()
            outBuf.clear()
            invoke(inBuf, outBuf)
            outBuf.rewind()
            val raw = ByteArray(outBytes)
            outBuf.get(raw)
            System.arraycopy(swapIfNeeded(raw, output.dtype), 0, result, i * outBytes, outBytes)
        }
        val meta = linkedMapOf("format" to FORMAT, "kind" to kind)
        output.quantization?.let {
            meta["scale"] = it.scale.toString()
            meta["zero_point"] = it.zeroPoint.toString()
        }
        return Safetensors.encode(listOf(NamedTensor(OUTPUTS, output.dtype, listOf(t.samples, outSize), result)), meta)
    }

    private fun checkQuantization(meta: Map<String, String>, source: String) {
        val want = input.quantization ?: return
        val scale = meta["scale"]?.toDoubleOrNull()
        val zp = meta["zero_point"]?.toIntOrNull()
        // The model stores its scale in float32; the host may send it as float64.
        if (scale == null || scale.toFloat() != want.scale.toFloat() || zp != want.zeroPoint) {
            throw IllegalArgumentException(
                "$source: inputs quantized with scale ${meta["scale"]}, zero point ${meta["zero_point"]}; the model takes $want",
            )
        }
    }

    /** Tensor bytes are little-endian in the file and native in the buffers. */
    private fun swapIfNeeded(b: ByteArray, dtype: String): ByteArray {
        val n = Safetensors.SIZES.getValue(dtype)
        if (n == 1 || ByteOrder.nativeOrder() == ByteOrder.LITTLE_ENDIAN) return b
        val out = b.copyOf()
        for (i in out.indices step n) for (k in 0 until n) out[i + k] = b[i + n - 1 - k]
        return out
    }

    companion object {
        const val INPUTS = "inputs"
        const val OUTPUTS = "outputs"
        const val FORMAT = "edgekd-parity-1"
    }
}
