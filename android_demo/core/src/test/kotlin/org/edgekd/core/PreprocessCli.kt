package org.edgekd.core

import org.json.JSONObject
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO
import kotlin.system.exitProcess

/**
 * A JVM command line over the core module, for tests/test_kotlin_core.py and test_app_contract.py.
 * All binary files are raw little-endian arrays.
 *
 *   preprocess --size N --resize squash|center_crop --layout NCHW|NHWC --mean a,b,c --std a,b,c
 *              [--scale S --zero-point Z] --out DIR IMAGE...
 *       writes DIR/<name>.u8 (size x size x 3 resized pixels), <name>.f32 (normalized tensor) and,
 *       with --scale, <name>.i8 (int8 quantized tensor)
 *   decide --classes K --temperature T --threshold P --positive-index I [--scale S --zero-point Z]
 *          IN OUT
 *       IN: n x K logits, float64 (or int8 with --scale); writes OUT.prob (n x K float64) and
 *       OUT.dec (n bytes, 1 = positive)
 *   manifest --format F FILE
 *       prints the artefact the app would use, as JSON
 *   parity --classes K --out-dtype int8|float32 [--scale S --zero-point Z] --in-dtype D
 *          --sample-shape a,b,c IN OUT
 *       runs ParityRunner with a fake model (output k = input element k) from IN to OUT
 *       (safetensors files)
 *   image-kind FILE...
 *       one line per file: "ok" or the reason ImageKinds.requireRgb refuses it
 *   pipeline-input --manifest FILE --out DIR IMAGE...
 *       the app's input tensor for each image (Pipeline.inputTensor): DIR/<name>.in
 *   pipeline-output --manifest FILE RAW...
 *       the app's prediction from each raw output tensor, one JSON line per file
 */
fun main(args: Array<String>) {
    try {
        val rest = args.drop(1)
        when (args.firstOrNull()) {
            "preprocess" -> preprocess(Opts(rest))
            "decide" -> decide(Opts(rest))
            "manifest" -> manifest(Opts(rest))
            "parity" -> parity(Opts(rest))
            "pipeline-input" -> pipelineInput(Opts(rest))
            "pipeline-output" -> pipelineOutput(Opts(rest))
            "image-kind" -> imageKind(rest)
            else -> throw IllegalArgumentException("usage: preprocess|decide|manifest|parity|pipeline-input|pipeline-output|image-kind ...")
        }
    } catch (e: IllegalArgumentException) {
        System.err.println("error: ${e.message}")
        exitProcess(2)
    }
}

private class Opts(args: List<String>) {
    val named = HashMap<String, String>()
    val positional = ArrayList<String>()

    init {
        var i = 0
        while (i < args.size) {
            if (args[i].startsWith("--")) {
                require(i + 1 < args.size) { "${args[i]} needs a value" }
                named[args[i].removePrefix("--")] = args[i + 1]
                i += 2
            } else {
                positional.add(args[i++])
            }
        }
    }

    fun str(k: String): String = named[k] ?: throw IllegalArgumentException("missing --$k")
    fun int(k: String): Int = str(k).toInt()
    fun dbl(k: String): Double = str(k).toDouble()
    fun doubles(k: String): List<Double> = str(k).split(",").map { it.toDouble() }
    fun quant(): Quantization? = named["scale"]?.let { Quantization(it.toDouble(), int("zero-point")) }
}

private fun readImage(path: String): RgbImage {
    val img = ImageIO.read(File(path)) ?: throw IllegalArgumentException("$path: cannot decode image")
    val argb = img.getRGB(0, 0, img.width, img.height, null, 0, img.width)
    return RgbImage.fromArgb(img.width, img.height, argb)
}

private fun preprocess(o: Opts) {
    val size = o.int("size")
    val rule = ResizeRule.of(o.str("resize"))
    val layout = Layout.of(o.str("layout"))
    val out = File(o.str("out")).apply { mkdirs() }
    val quant = o.quant()
    for (path in o.positional) {
        val name = File(path).nameWithoutExtension
        val resized = Resize.resizeUint8(readImage(path), size, rule)
        File(out, "$name.u8").writeBytes(resized.pixels)
        val x = Normalize.normalize(resized, o.doubles("mean"), o.doubles("std"), layout)
        val f = ByteBuffer.allocate(4 * x.size).order(ByteOrder.LITTLE_ENDIAN)
        f.asFloatBuffer().put(x)
        File(out, "$name.f32").writeBytes(f.array())
        if (quant != null) File(out, "$name.i8").writeBytes(Normalize.quantizeInt8(x, quant))
    }
}

private fun decide(o: Opts) {
    val k = o.int("classes")
    val (inPath, outPath) = o.positional
    val bytes = File(inPath).readBytes()
    val quant = o.quant()
    val logits = if (quant != null) {
        Postprocess.dequantize(bytes, quant)
    } else {
        val d = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asDoubleBuffer()
        DoubleArray(d.limit()) { d.get(it) }
    }
    val n = logits.size / k
    val probs = ByteBuffer.allocate(8 * n * k).order(ByteOrder.LITTLE_ENDIAN)
    val decisions = ByteArray(n)
    for (i in 0 until n) {
        val p = Postprocess.softmax(logits.copyOfRange(i * k, (i + 1) * k), o.dbl("temperature"))
        p.forEach { probs.putDouble(it) }
        decisions[i] = if (Postprocess.decide(p, o.int("positive-index"), o.dbl("threshold"))) 1 else 0
    }
    File("$outPath.prob").writeBytes(probs.array())
    File("$outPath.dec").writeBytes(decisions)
}

private fun manifest(o: Opts) {
    val file = File(o.positional.single())
    val s = ManifestReader.read(file.readText(), o.str("format"), source = file.path)
    val p = s.preprocessing
    fun tensor(t: TensorSpec) = mapOf(
        "name" to t.name, "shape" to t.shape, "dtype" to t.dtype,
        "quantization" to t.quantization?.let { mapOf("scale" to it.scale, "zero_point" to it.zeroPoint) },
    )
    val out = mapOf(
        "name" to s.name, "path" to s.path, "format" to s.format, "precision" to s.precision,
        "input" to tensor(s.input) + ("layout" to s.layout.name),
        "output" to tensor(s.output) + ("kind" to s.outputKind),
        "preprocessing" to mapOf(
            "size" to p.size, "mean" to p.mean, "std" to p.std, "resize" to p.resize.id,
            "interpolation" to p.interpolation,
        ),
        "labels" to s.labels, "positive_index" to s.positiveIndex,
        "temperature" to s.temperature, "threshold" to s.threshold, "dataset" to s.dataset,
        "gate" to mapOf("status" to s.gate.status, "detail" to s.gate.detail),
    )
    println(JSONObject(out as Map<*, *>).toString())
}

private fun parity(o: Opts) {
    val (inPath, outPath) = o.positional
    val k = o.int("classes")
    val outDtype = o.str("out-dtype")
    val sampleShape = o.str("sample-shape").split(",").map { it.toInt() }
    val input = TensorInfo(o.str("in-dtype"), listOf(1) + sampleShape, null)
    val output = TensorInfo(outDtype, listOf(1, k), o.quant())
    val item = Safetensors.SIZES.getValue(outDtype)
    val runner = ParityRunner(input, output)
    // The fake model copies the first k * itemsize input bytes to the output.
    val result = runner.run(File(inPath).readBytes(), inPath) { inBuf, outBuf ->
        val b = ByteArray(k * item)
        inBuf.get(b)
        outBuf.put(b)
    }
    File(outPath).writeBytes(result)
}

private fun pipelineOf(o: Opts): Pipeline {
    val file = File(o.str("manifest"))
    return Pipeline(ManifestReader.read(file.readText(), "tflite", source = file.path))
}

private fun pipelineInput(o: Opts) {
    val pipe = pipelineOf(o)
    val out = File(o.str("out")).apply { mkdirs() }
    for (path in o.positional) {
        val buf = pipe.inputTensor(readImage(path))
        val bytes = ByteArray(buf.remaining())
        buf.get(bytes)
        File(out, File(path).nameWithoutExtension + ".in").writeBytes(bytes)
    }
}

private fun pipelineOutput(o: Opts) {
    val pipe = pipelineOf(o)
    for (path in o.positional) {
        val p = pipe.predict(ByteBuffer.wrap(File(path).readBytes()))
        val line = mapOf(
            "file" to path, "probabilities" to p.probabilities,
            "positive_probability" to p.positiveProbability, "positive" to p.positive, "label" to p.label,
        )
        println(JSONObject(line as Map<*, *>).toString())
    }
}

private fun imageKind(paths: List<String>) {
    for (path in paths) {
        val verdict = try {
            File(path).inputStream().use { ImageKinds.requireRgb(it, path) }
            "ok"
        } catch (e: ImageRefused) {
            e.message
        }
        println(verdict)
    }
}
