package org.edgekd.core

import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertTrue

/**
 * Unit tests of the core module that need nothing but the Kotlin standard library and kotlin-test.
 * (Parity with the Python code is checked from Python: tests/test_kotlin_core.py.)
 * Run by [TestMain] here and by `./gradlew :core:check` in the Android project.
 */
object CoreTests {
    val all: List<Pair<String, () -> Unit>> = listOf(
        "json parses nested values" to ::jsonParses,
        "json rejects bad input" to ::jsonRejects,
        "manifest reads the tflite artefact" to ::manifestReads,
        "manifest errors name the field" to ::manifestErrors,
        "numpy sum is pairwise" to ::numpySum,
        "fma emulation equals Math.fma" to ::fmaEmulation,
        "fused and separate sums differ only at rounding ties" to ::accumulations,
        "resize to the same size is the identity" to ::resizeIdentity,
        "resize keeps a flat image flat" to ::resizeFlat,
        "center crop takes the middle" to ::centerCrop,
        "normalize layouts agree" to ::normalizeLayouts,
        "int8 quantization rounds half to even and clamps" to ::quantize,
        "softmax and the decision" to ::softmaxDecision,
        "pipeline int8 round trip" to ::pipelineInt8,
        "EKDT round trip" to ::ekdtRoundTrip,
        "parity runner runs each sample" to ::parityRunner,
    )

    const val SAMPLE_MANIFEST = """{
      "manifest_version": 1, "created_by": "edgekd test", "labels": ["other", "melanoma"],
      "positive_index": 1, "temperature": 1.5, "threshold": 0.25,
      "artifacts": [
        {"name": "m_onnx_fp32", "path": "m.onnx", "format": "onnx", "precision": "fp32"},
        {"name": "m_tflite_int8", "path": "m_tflite_int8.tflite", "format": "tflite", "precision": "int8",
         "bytes": 1000, "sha256": "00",
         "input": {"name": "image", "shape": [1, 8, 8, 3], "layout": "NHWC", "dtype": "int8",
                   "quantization": {"scale": 0.0186, "zero_point": -14}},
         "output": {"name": "logits", "shape": [1, 2], "dtype": "int8",
                    "quantization": {"scale": 0.05, "zero_point": 3}, "kind": "logits"},
         "preprocessing": {"size": 8, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "resize": "center_crop", "interpolation": "bilinear_antialias"},
         "labels": ["other", "melanoma"], "positive_index": 1, "temperature": 1.5, "threshold": 0.25,
         "graph_report": {"ratio": NaN}}
      ]
    }"""

    private fun jsonParses() {
        val v = Json.parse("""{"a": [1, -2.5e1, true, null, "x\"\u00e9\n"], "b": {}}""") as Map<*, *>
        assertEquals(listOf(1.0, -25.0, true, null, "x\"\u00e9\n"), v["a"])
        assertEquals(emptyMap<String, Any?>(), v["b"])
        assertEquals(listOf(Double.NEGATIVE_INFINITY), Json.parse("[-Infinity]"))
    }

    private fun jsonRejects() {
        for (bad in listOf("{", "[1,]", "{\"a\" 1}", "01", "1 2", "\"abc", "{'a': 1}", "tru")) {
            assertFailsWith<JsonException>(bad) { Json.parse(bad) }
        }
    }

    private fun manifestReads() {
        val s = ManifestReader.read(SAMPLE_MANIFEST, "tflite")
        assertEquals("m_tflite_int8.tflite", s.path)
        assertEquals(Layout.NHWC, s.layout)
        assertEquals(Quantization(0.0186, -14), s.input.quantization)
        assertEquals(ResizeRule.CENTER_CROP, s.preprocessing.resize)
        assertEquals(listOf("other", "melanoma"), s.labels)
        assertEquals(1.5, s.temperature)
        assertEquals(0.25, s.threshold)
        assertFailsWith<ManifestException> { ManifestReader.read(SAMPLE_MANIFEST, "coreml") }
    }

    private fun manifestErrors() {
        val noScale = SAMPLE_MANIFEST.replace("\"scale\": 0.05, ", "")
        val e1 = assertFailsWith<ManifestException> { ManifestReader.read(noScale, "tflite") }
        assertTrue("output.quantization lacks \"scale\"" in e1.message!!, e1.message)
        val badSize = SAMPLE_MANIFEST.replace("\"size\": 8", "\"size\": \"8\"")
        val e2 = assertFailsWith<ManifestException> { ManifestReader.read(badSize, "tflite") }
        assertTrue("preprocessing.size: expected an integer, got a string" in e2.message!!, e2.message)
        val v2 = SAMPLE_MANIFEST.replace("\"manifest_version\": 1", "\"manifest_version\": 2")
        assertFailsWith<ManifestException> { ManifestReader.read(v2, "tflite") }
        val shape = SAMPLE_MANIFEST.replace("[1, 8, 8, 3]", "[1, 3, 8, 8]")
        assertFailsWith<ManifestException> { ManifestReader.read(shape, "tflite") }
    }

    private fun numpySum() {
        val a = DoubleArray(300) { 1.0 / (it + 3) }
        var plain = 0.0
        a.forEach { plain += it }
        assertTrue(Math.abs(NumpySum.sum(a) - plain) < 1e-12)
        assertEquals(6.0, NumpySum.sum(doubleArrayOf(1.0, 2.0, 3.0)))
        assertEquals(0.0, NumpySum.sum(DoubleArray(0)))
    }

    private fun fmaEmulation() {
        val r = java.util.Random(11)
        val hard = listOf(
            Triple(Math.scalb(1.0, -26), Math.scalb(1.0, -27), 1.0), // exact tie: to even
            Triple(1.0 + Math.ulp(1.0), Math.scalb(1.0 + Math.ulp(1.0), -53), 1.0),
            Triple(0.2433035714285694, 173.74330357142856, 0.7566964285714306 * 174.74330357142856),
            Triple(0.1, 10.0, -1.0), Triple(3.0, 0.0, 5.5), Triple(-0.7, 0.3, 0.21),
        )
        for ((a, b, c) in hard) assertEquals(Math.fma(a, b, c), Fma.emulated(a, b, c), "fma($a, $b, $c)")
        repeat(200_000) {
            val pixel = Triple(r.nextDouble(), r.nextInt(256).toDouble(), r.nextDouble() * 255.0)
            val wide = Triple(
                Math.scalb(r.nextDouble() - 0.5, r.nextInt(80) - 40),
                Math.scalb(r.nextDouble() - 0.5, r.nextInt(80) - 40),
                Math.scalb(r.nextDouble() - 0.5, r.nextInt(80) - 40),
            )
            for ((a, b, c) in listOf(pixel, wide)) {
                assertEquals(Math.fma(a, b, c), Fma.emulated(a, b, c), "fma($a, $b, $c)")
            }
        }
    }

    private fun accumulations() {
        val img = randomImage(97, 131, 4)
        val fused = Resize.resizeUint8(img, 224, ResizeRule.SQUASH, Resize.Accumulation.FUSED).pixels
        val separate = Resize.resizeUint8(img, 224, ResizeRule.SQUASH, Resize.Accumulation.SEPARATE).pixels
        val diff = fused.indices.count { fused[it] != separate[it] }
        assertTrue(fused.indices.all { Math.abs((fused[it].toInt() and 0xFF) - (separate[it].toInt() and 0xFF)) <= 1 })
        assertTrue(diff < fused.size / 1000, "$diff of ${fused.size} differ")
    }

    private fun randomImage(w: Int, h: Int, seed: Int): RgbImage {
        val r = java.util.Random(seed.toLong())
        return RgbImage(w, h, ByteArray(w * h * 3).also { r.nextBytes(it) })
    }

    private fun resizeIdentity() {
        val img = randomImage(16, 16, 1)
        assertContentEquals(img.pixels, Resize.resizeUint8(img, 16, ResizeRule.SQUASH).pixels)
        assertContentEquals(img.pixels, Resize.resizeUint8(img, 16, ResizeRule.CENTER_CROP).pixels)
    }

    private fun resizeFlat() {
        for ((w, h) in listOf(200 to 150, 97 to 131, 5 to 9)) {
            val img = RgbImage(w, h, ByteArray(w * h * 3) { (if (it % 3 == 0) 200 else 17).toByte() })
            val out = Resize.resizeUint8(img, 24, ResizeRule.SQUASH)
            for (i in 0 until 24 * 24) {
                assertEquals(200, out.pixels[3 * i].toInt() and 0xFF)
                assertEquals(17, out.pixels[3 * i + 1].toInt())
            }
        }
    }

    private fun centerCrop() {
        assertEquals(Pair(8, 10), Resize.resizedShape(150, 200, 8, ResizeRule.CENTER_CROP))
        assertEquals(Pair(10, 8), Resize.resizedShape(131, 97, 8, ResizeRule.CENTER_CROP))
        // A 16 x 8 image whose left and right quarters are black: the crop to 8 x 8 keeps the middle.
        val w = 16
        val img = RgbImage(w, 8, ByteArray(w * 8 * 3) { i -> if ((i / 3) % w in 4 until 12) 100 else 0 })
        val out = Resize.resizeUint8(img, 8, ResizeRule.CENTER_CROP)
        assertTrue(out.pixels.all { it.toInt() == 100 })
    }

    private fun normalizeLayouts() {
        val img = randomImage(4, 4, 2)
        val mean = listOf(0.485, 0.456, 0.406)
        val std = listOf(0.229, 0.224, 0.225)
        val nhwc = Normalize.normalize(img, mean, std, Layout.NHWC)
        val nchw = Normalize.normalize(img, mean, std, Layout.NCHW)
        for (i in 0 until 16) for (c in 0 until 3) assertEquals(nhwc[3 * i + c], nchw[c * 16 + i])
        val v = img.pixels[5].toInt() and 0xFF
        assertEquals((v / 255f - 0.406f) / 0.225f, nhwc[5])
    }

    private fun quantize() {
        val q = Normalize.quantizeInt8(floatArrayOf(0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 1000f, -1000f), Quantization(1.0, 0))
        assertContentEquals(byteArrayOf(0, 2, 2, 0, -2, 127, -128), q)
        assertContentEquals(byteArrayOf(-9), Normalize.quantizeInt8(floatArrayOf(0.1f), Quantization(0.02, -14)))
    }

    private fun softmaxDecision() {
        val p = Postprocess.softmax(doubleArrayOf(1.0, 1.0), 1.3)
        assertEquals(listOf(0.5, 0.5), p.toList())
        assertTrue(Postprocess.decide(p, 1, 0.5))
        assertFalse(Postprocess.decide(p, 1, Math.nextUp(0.5)))
        val hot = Postprocess.softmax(doubleArrayOf(0.0, 2.0), 2.0)
        assertTrue(Math.abs(hot[1] - 1.0 / (1.0 + Math.exp(-1.0))) < 1e-15)
        val big = Postprocess.softmax(doubleArrayOf(1000.0, -1000.0, 0.0), 1.0)
        assertEquals(1.0, big[0])
    }

    private fun pipelineInt8() {
        val spec = ManifestReader.read(SAMPLE_MANIFEST, "tflite")
        val pipe = Pipeline(spec)
        val buf = pipe.inputTensor(randomImage(20, 12, 3))
        assertEquals(8 * 8 * 3, buf.remaining())
        val out = ByteBuffer.allocateDirect(2).order(ByteOrder.nativeOrder())
        out.put(byteArrayOf(3, 23)).rewind() // logits (0, 1.0): p1 = sigmoid(1 / 1.5) = 0.66
        val pred = pipe.predict(out)
        assertTrue(Math.abs(pred.positiveProbability - 1.0 / (1.0 + Math.exp(-1.0 / 1.5))) < 1e-12)
        assertTrue(pred.positive)
        assertEquals("melanoma", pred.label)
    }

    private fun ekdtRoundTrip() {
        val data = ByteArray(2 * 3 * 4) { it.toByte() }
        val file = Ekdt.encode(data, "float32", listOf(2, 3), mapOf("kind" to "logits", "layout" to null))
        assertEquals(0, (file.size - data.size) % 16)
        val t = Ekdt.decode(file)
        assertEquals(listOf(2, 3), t.shape)
        assertEquals("logits", t.header["kind"])
        assertContentEquals(data.copyOfRange(12, 24), t.sample(1))
        assertFailsWith<IllegalArgumentException> { Ekdt.decode(file.copyOf(file.size - 1)) }
    }

    private fun parityRunner() {
        val inputs = Ekdt.encode(ByteArray(3 * 4) { it.toByte() }, "int8", listOf(3, 4), mapOf("kind" to "inputs"))
        val runner = ParityRunner(TensorInfo("int8", listOf(1, 4), null), TensorInfo("int8", listOf(1, 2), Quantization(0.5, 1)))
        val out = Ekdt.decode(runner.run(inputs, "inputs") { i, o -> o.put(i.get(3)).put(i.get(0)) })
        assertEquals(listOf(3, 2), out.shape)
        assertContentEquals(byteArrayOf(3, 0, 7, 4, 11, 8), out.data)
        assertEquals(mapOf("scale" to 0.5, "zero_point" to 1.0), out.header["quantization"])
        val wrong = Ekdt.encode(ByteArray(6), "int8", listOf(2, 3), mapOf())
        assertFailsWith<IllegalArgumentException> { runner.run(wrong, "wrong") { _, _ -> } }
    }
}
