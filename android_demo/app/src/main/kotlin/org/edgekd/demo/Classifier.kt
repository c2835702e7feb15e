package org.edgekd.demo

import android.content.Context
import android.os.SystemClock
import org.edgekd.core.ManifestException
import org.edgekd.core.ManifestReader
import org.edgekd.core.ModelSpec
import org.edgekd.core.Pipeline
import org.edgekd.core.PixelSource
import org.edgekd.core.Prediction
import org.edgekd.core.Quantization
import org.edgekd.core.TensorInfo
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.Tensor
import java.io.Closeable
import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/** One classification with its timings. */
data class Classification(val prediction: Prediction, val preprocessMs: Double, val inferenceMs: Double)

/**
 * The INT8 .tflite from assets, run with LiteRT's Interpreter. Everything else (manifest, resize,
 * normalize, quantize, dequantize, softmax, threshold) is org.edgekd.core, the pure-Kotlin module
 * that the CI holds to the Python preprocessing.
 *
 * LiteRT's Interpreter is not thread-safe, and closing it while it runs crashes: [classify] and
 * [close] hold the same lock, so a close waits for a running classification, and a classification
 * after close fails with a message instead of touching a freed interpreter.
 */
class Classifier private constructor(val spec: ModelSpec, private val interpreter: Interpreter) : Closeable {
    private val pipeline = Pipeline(spec)
    private val output: ByteBuffer = ByteBuffer.allocateDirect(pipeline.outputBytes).order(ByteOrder.nativeOrder())
    private var closed = false

    /** One image at a time (synchronized); reads the pixels row by row, never copying them whole. */
    @Synchronized
    fun classify(image: PixelSource): Classification {
        check(!closed) { "the model was closed" }
        val t0 = SystemClock.elapsedRealtimeNanos()
        val input = pipeline.inputTensor(image)
        val t1 = SystemClock.elapsedRealtimeNanos()
        output.clear()
        interpreter.run(input, output)
        val t2 = SystemClock.elapsedRealtimeNanos()
        return Classification(pipeline.predict(output), (t1 - t0) / 1e6, (t2 - t1) / 1e6)
    }

    @Synchronized
    override fun close() {
        if (!closed) {
            closed = true
            interpreter.close()
        }
    }

    companion object {
        const val MANIFEST_ASSET = "manifest.json"

        fun load(context: Context, threads: Int = 4): Classifier {
            val text = try {
                context.assets.open(MANIFEST_ASSET).bufferedReader().use { it.readText() }
            } catch (e: java.io.IOException) {
                throw ManifestException(
                    "assets/$MANIFEST_ASSET is missing: run `python -m exporters.sync_demos EXPORT_DIR` and rebuild",
                )
            }
            val spec = ManifestReader.read(text, "tflite", source = "assets/$MANIFEST_ASSET")
            val interpreter = Interpreter(mapAsset(context, spec.path), Interpreter.Options().setNumThreads(threads))
            try {
                checkAgainstManifest(interpreter, spec)
            } catch (e: ManifestException) {
                interpreter.close()
                throw e
            }
            return Classifier(spec, interpreter)
        }

        fun mapAsset(context: Context, path: String): MappedByteBuffer {
            val fd = try {
                context.assets.openFd(path)
            } catch (e: java.io.IOException) {
                throw ManifestException("assets/$path (named by the manifest) is missing or compressed: ${e.message}")
            }
            return fd.use {
                FileInputStream(it.fileDescriptor).channel.use { ch ->
                    ch.map(FileChannel.MapMode.READ_ONLY, it.startOffset, it.declaredLength)
                }
            }
        }

        fun mapFile(file: File): MappedByteBuffer =
            FileInputStream(file).channel.use { it.map(FileChannel.MapMode.READ_ONLY, 0, it.size()) }

        fun tensorInfo(t: Tensor): TensorInfo {
            val dtype = when (t.dataType()) {
                DataType.FLOAT32 -> "float32"
                DataType.INT8 -> "int8"
                DataType.UINT8 -> "uint8"
                else -> throw ManifestException("tensor ${t.name()} has unsupported type ${t.dataType()}")
            }
            val q = t.quantizationParams()
            val quant = if (dtype == "float32") null else Quantization(q.scale.toDouble(), q.zeroPoint)
            return TensorInfo(dtype, t.shape().toList(), quant)
        }

        /** The model file and the manifest must describe the same tensors. */
        private fun checkAgainstManifest(interpreter: Interpreter, spec: ModelSpec) {
            val pairs = listOf(
                "input" to Pair(tensorInfo(interpreter.getInputTensor(0)), spec.input),
                "output" to Pair(tensorInfo(interpreter.getOutputTensor(0)), spec.output),
            )
            for ((what, pair) in pairs) {
                val (model, manifest) = pair
                val sameQuant = model.quantization?.let { mq ->
                    val q = manifest.quantization
                    q != null && mq.scale.toFloat() == q.scale.toFloat() && mq.zeroPoint == q.zeroPoint
                } ?: (manifest.quantization == null)
                if (model.dtype != manifest.dtype || model.shape != manifest.shape || !sameQuant) {
                    throw ManifestException(
                        "${spec.path}: $what is ${model.dtype} ${model.shape} ${model.quantization}, " +
                            "the manifest says ${manifest.dtype} ${manifest.shape} ${manifest.quantization}",
                    )
                }
            }
        }
    }
}
