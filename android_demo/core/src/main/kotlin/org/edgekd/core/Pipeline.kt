package org.edgekd.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * Everything between a decoded image and a [Prediction] except the model call itself:
 * resize -> normalize -> (quantize) into the input tensor's bytes, and output bytes -> decision.
 * Tensor bytes are in native byte order, as LiteRT's Interpreter expects in a direct ByteBuffer.
 */
class Pipeline(val spec: ModelSpec) {
    val inputBytes: Int = spec.input.shape.fold(1) { a, b -> a * b } * elementSize(spec.input.dtype)
    val outputBytes: Int = spec.output.shape.fold(1) { a, b -> a * b } * elementSize(spec.output.dtype)

    /** The model-ready pixels (size x size RGB), as in transforms.resize_uint8. */
    fun resize(image: PixelSource): RgbImage =
        Resize.resizeUint8(image, spec.preprocessing.size, spec.preprocessing.resize)

    /** The normalized float tensor, as in transforms.normalize, in the model's layout. */
    fun normalize(resized: RgbImage): FloatArray =
        Normalize.normalize(resized, spec.preprocessing.mean, spec.preprocessing.std, spec.layout)

    /** A direct buffer holding the input tensor for one image, read row by row. */
    fun inputTensor(image: PixelSource): ByteBuffer = tensorBuffer(normalize(resize(image)))

    /** Float tensor -> the input's bytes (int8 quantized or float32). */
    fun tensorBuffer(x: FloatArray): ByteBuffer {
        val buf = ByteBuffer.allocateDirect(inputBytes).order(ByteOrder.nativeOrder())
        val q = spec.input.quantization
        if (q != null) buf.put(Normalize.quantizeInt8(x, q)) else buf.asFloatBuffer().put(x)
        buf.rewind()
        return buf
    }

    /** The output tensor's bytes -> logits or probabilities as float64. */
    fun outputValues(out: ByteBuffer): DoubleArray {
        val b = out.duplicate().order(ByteOrder.nativeOrder())
        b.rewind()
        val q = spec.output.quantization
        val n = outputBytes / elementSize(spec.output.dtype)
        if (q != null) {
            val raw = ByteArray(n)
            b.get(raw)
            return Postprocess.dequantize(raw, q)
        }
        val f = b.asFloatBuffer()
        return DoubleArray(n) { f.get(it).toDouble() }
    }

    fun predict(out: ByteBuffer): Prediction = Postprocess.predict(spec, outputValues(out))

    companion object {
        fun elementSize(dtype: String): Int = when (dtype) {
            "int8" -> 1
            "float32" -> 4
            else -> throw ManifestException("unsupported tensor dtype $dtype")
        }
    }
}
