package org.edgekd.core

import java.lang.management.ManagementFactory
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertTrue

/**
 * Unit tests of the core module that need nothing but the Kotlin standard library, kotlin-test and
 * org.json. (Parity with the Python code is checked from Python: tests/test_kotlin_core.py.)
 * Run by [TestMain] here and by `./gradlew :core:check` in the Android project.
 */
object CoreTests {
    val all: List<Pair<String, () -> Unit>> = listOf(
        "manifest reads the tflite artefact" to ::manifestReads,
        "manifest errors name the field" to ::manifestErrors,
        "manifest rejects bad JSON and non-finite numbers" to ::manifestRejects,
        "numpy sum is pairwise" to ::numpySum,
        "resize to the same size is the identity" to ::resizeIdentity,
        "resize keeps a flat image flat" to ::resizeFlat,
        "center crop takes the middle" to ::centerCrop,
        "a 12-megapixel photo is resized in place" to ::twelveMegapixels,
        "transparent pixels are refused" to ::transparentPixels,
        "decode plan" to ::decodePlan,
        "image kinds refuse what Python refuses" to ::imageKinds,
        "normalize layouts agree" to ::normalizeLayouts,
        "int8 quantization rounds half to even and clamps" to ::quantize,
        "softmax and the decision" to ::softmaxDecision,
        "pipeline int8 round trip" to ::pipelineInt8,
        "screening wording" to ::screeningWording,
        "safetensors round trip" to ::safetensorsRoundTrip,
        "parity runner runs each sample" to ::parityRunner,
    )

    const val SAMPLE_MANIFEST = """{
      "manifest_version": 1, "created_by": "edgekd test", "labels": ["other", "melanoma"],
      "positive_index": 1, "temperature": 1.5, "threshold": 0.25, "dataset": "HAM10000",
      "artifacts": [
        {"name": "m_onnx_fp32", "path": "m.onnx", "format": "onnx", "precision": "fp32"},
        {"name": "m_tflite_int8", "path": "m_tflite_int8.tflite", "format": "tflite", "precision": "int8",
         "bytes": 1000, "sha256": "00", "dataset": "HAM10000",
         "gate": {"status": "pass", "detail": "parity gate passed on ham10000 (holdout, n=1495), 2026-11-29"},
         "input": {"name": "image", "shape": [1, 8, 8, 3], "layout": "NHWC", "dtype": "int8",
                   "quantization": {"scale": 0.0186, "zero_point": -14}},
         "output": {"name": "logits", "shape": [1, 2], "dtype": "int8",
                    "quantization": {"scale": 0.05, "zero_point": 3}, "kind": "logits"},
         "preprocessing": {"size": 8, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "resize": "center_crop", "interpolation": "bilinear_antialias"},
         "labels": ["other", "melanoma"], "positive_index": 1, "temperature": 1.5, "threshold": 0.25}
      ]
    }"""

    private fun manifestReads() {
        val s = ManifestReader.read(SAMPLE_MANIFEST, "tflite")
        assertEquals("m_tflite_int8.tflite", s.path)
        assertEquals(Layout.NHWC, s.layout)
        assertEquals(Quantization(0.0186, -14), s.input.quantization)
        assertEquals(ResizeRule.CENTER_CROP, s.preprocessing.resize)
        assertEquals(listOf("other", "melanoma"), s.labels)
        assertEquals(1.5, s.temperature)
        assertEquals(0.25, s.threshold)
        assertEquals("HAM10000", s.dataset)
        assertTrue(s.gate.parityChecked)
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
        val noGate = SAMPLE_MANIFEST.replace("\"gate\":", "\"gate_\":")
        val e3 = assertFailsWith<ManifestException> { ManifestReader.read(noGate, "tflite") }
        assertTrue("lacks \"gate\"" in e3.message!!, e3.message)
        val ungated = SAMPLE_MANIFEST.replace("\"status\": \"pass\"", "\"status\": \"$NOT_PARITY_CHECKED\"")
        assertFalse(ManifestReader.read(ungated, "tflite").gate.parityChecked)
        val made = SAMPLE_MANIFEST.replace("\"status\": \"pass\"", "\"status\": \"fail\"")
        assertFailsWith<ManifestException> { ManifestReader.read(made, "tflite") }
    }

    private fun manifestRejects() {
        for (bad in listOf("{", "[1]", "{\"a\" 1}", "{} x", "\"abc")) {
            assertFailsWith<ManifestException>(bad) { ManifestReader.read(bad, "tflite") }
        }
        for (value in listOf("NaN", "Infinity", "1e400")) {
            val text = SAMPLE_MANIFEST.replace("\"threshold\": 0.25}", "\"threshold\": $value}")
            val e = assertFailsWith<ManifestException>(value) { ManifestReader.read(text, "tflite") }
            // org.json refuses non-finite numbers while parsing; the accessor checks them again.
            val m = e.message!!
            assertTrue("threshold: expected a finite number" in m || "Forbidden numeric value" in m, m)
        }
    }

    private fun numpySum() {
        val a = DoubleArray(300) { 1.0 / (it + 3) }
        var plain = 0.0
        a.forEach { plain += it }
        assertTrue(Math.abs(NumpySum.sum(a) - plain) < 1e-12)
        assertEquals(6.0, NumpySum.sum(doubleArrayOf(1.0, 2.0, 3.0)))
        assertEquals(0.0, NumpySum.sum(DoubleArray(0)))
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

    private fun allocatedBytes(): Long =
        (ManagementFactory.getThreadMXBean() as com.sun.management.ThreadMXBean).getThreadAllocatedBytes(Thread.currentThread().id)

    /**
     * The app copies a decoded 4000 x 3000 photo once (Bitmap.copyPixelsToBuffer: full-resolution
     * copy 2 beside the Bitmap) and the core reads it in place: preprocessing must allocate far less
     * than one more full-resolution copy, and give the same tensor as the whole-image path.
     */
    private fun twelveMegapixels() {
        val (w, h) = 4000 to 3000
        val rgba = ByteBuffer.allocate(w * h * 4)
        val r = java.util.Random(5)
        val line = ByteArray(w * 4)
        for (y in 0 until h) {
            for (x in 0 until w) {
                line[4 * x] = (x * 255 / w).toByte()
                line[4 * x + 1] = (y * 255 / h).toByte()
                line[4 * x + 2] = r.nextInt(256).toByte()
                line[4 * x + 3] = 0xFF.toByte()
            }
            rgba.put(line)
        }
        val spec = ManifestReader.read(SAMPLE_MANIFEST.replace("\"size\": 8", "\"size\": 224")
            .replace("[1, 8, 8, 3]", "[1, 224, 224, 3]"), "tflite")
        val pipe = Pipeline(spec)
        val before = allocatedBytes()
        val tensor = pipe.inputTensor(RgbaBufferSource(w, h, rgba))
        val used = allocatedBytes() - before
        val fullCopy = w.toLong() * h * 4
        assertTrue(used < fullCopy / 8, "preprocessing allocated $used bytes; one full-resolution copy is $fullCopy")
        // The same pixels as one RgbImage (the whole-image path) give the same model input.
        val rgb = ByteArray(w * h * 3)
        for (i in 0 until w * h) for (c in 0 until 3) rgb[3 * i + c] = rgba.get(4 * i + c)
        val whole = pipe.inputTensor(RgbImage(w, h, rgb))
        assertEquals(whole, tensor)
    }

    private fun transparentPixels() {
        val rgba = ByteBuffer.wrap(ByteArray(4 * 4 * 4) { if (it % 4 == 3 && it != 39) -1 else 9 })
        val e = assertFailsWith<ImageRefused> {
            Resize.resizeUint8(RgbaBufferSource(4, 4, rgba, source = "photo.png"), 4, ResizeRule.SQUASH)
        }
        assertEquals("photo.png: image has transparent pixels; expected plain RGB", e.message)
    }

    private fun decodePlan() {
        assertEquals(1, DecodePlan.sampleSize(4000, 3000))
        assertEquals(1, DecodePlan.sampleSize(4096, 4096))
        assertEquals(2, DecodePlan.sampleSize(8160, 6144)) // 50 MP
        assertEquals(4, DecodePlan.sampleSize(16384, 12288)) // 200 MP
        assertEquals(Pair(2048, 1536), DecodePlan.displaySize(4000, 3000))
        assertEquals(Pair(600, 400), DecodePlan.displaySize(600, 400))
    }

    private fun imageKinds() {
        val png = byteArrayOf(-119, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 4, 0, 0, 0, 4, 8)
        fun pngOf(colourType: Int) = (png + byteArrayOf(colourType.toByte(), 0, 0, 0)).inputStream()
        assertEquals(ImageKind("PNG", "RGB"), ImageKinds.requireRgb(pngOf(2), "a.png"))
        val grey = assertFailsWith<ImageRefused> { ImageKinds.requireRgb(pngOf(0), "a.png") }
        assertEquals("a.png: image is greyscale (L), expected RGB", grey.message)
        val rgba = assertFailsWith<ImageRefused> { ImageKinds.requireRgb(pngOf(6), "a.png") }
        assertEquals("a.png: image is RGB with an alpha channel (RGBA), expected RGB", rgba.message)
        assertFailsWith<ImageRefused> { ImageKinds.requireRgb("not an image".byteInputStream(), "x") }
        assertFailsWith<ImageRefused> { ImageKinds.requireRgb(png.copyOf(14).inputStream(), "short.png") }
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

    private fun screeningWording() {
        val spec = ManifestReader.read(SAMPLE_MANIFEST, "tflite")
        val above = Prediction(listOf(0.7, 0.3), 0.3, true, "melanoma")
        val below = Prediction(listOf(0.9, 0.1), 0.1, false, "other")
        assertEquals("Above the model's referral threshold", Screening.headline(above))
        assertTrue("see a clinician" in Screening.advice(above))
        assertTrue(Screening.advice(below).startsWith("This does not rule out melanoma."))
        assertEquals("Model score for melanoma: 0.300 (referral threshold 0.250)", Screening.score(spec, above))
        assertEquals("Trained on: HAM10000", Screening.trainedOn(spec))
        assertTrue(Screening.gate(spec).startsWith("Parity-checked: parity gate passed on ham10000"))
        val ungated = spec.copy(gate = GateInfo(NOT_PARITY_CHECKED, "gate status: not run"))
        assertEquals("NOT parity-checked: gate status: not run", Screening.gate(ungated))
        assertTrue("not a medical device" in Screening.NOTICE)
        for (text in listOf(Screening.headline(above), Screening.advice(above), Screening.advice(below))) {
            assertFalse("Decision" in text || "diagnos" in text, text)
        }
    }

    private fun safetensorsRoundTrip() {
        val data = ByteArray(2 * 3 * 4) { it.toByte() }
        val file = Safetensors.encode(listOf(NamedTensor("outputs", "float32", listOf(2, 3), data)), mapOf("kind" to "logits"))
        val headerLength = ByteBuffer.wrap(file, 0, 8).order(ByteOrder.LITTLE_ENDIAN).long
        assertEquals(0L, (8 + headerLength) % 8)
        val back = Safetensors.decode(file)
        val t = back.tensor("outputs", "f")
        assertEquals(listOf(2, 3), t.shape)
        assertEquals("float32", t.dtype)
        assertEquals(mapOf("kind" to "logits"), back.metadata)
        assertContentEquals(data.copyOfRange(12, 24), t.sample(1))
        assertFailsWith<IllegalArgumentException> { Safetensors.decode(file.copyOf(file.size - 1)) }
        assertFailsWith<IllegalArgumentException> { Safetensors.decode(file + byteArrayOf(0)) }
        assertFailsWith<IllegalArgumentException> { Safetensors.decode(ByteArray(4)) }
    }

    private fun parityRunner() {
        val meta = mapOf("kind" to "inputs")
        val inputs = Safetensors.encode(listOf(NamedTensor("inputs", "int8", listOf(3, 4), ByteArray(12) { it.toByte() })), meta)
        val runner = ParityRunner(TensorInfo("int8", listOf(1, 4), null), TensorInfo("int8", listOf(1, 2), Quantization(0.5, 1)))
        val out = Safetensors.decode(runner.run(inputs, "inputs") { i, o -> o.put(i.get(3)).put(i.get(0)) })
        val t = out.tensor("outputs", "out")
        assertEquals(listOf(3, 2), t.shape)
        assertContentEquals(byteArrayOf(3, 0, 7, 4, 11, 8), t.data)
        assertEquals("0.5", out.metadata["scale"])
        assertEquals("1", out.metadata["zero_point"])
        val wrong = Safetensors.encode(listOf(NamedTensor("inputs", "int8", listOf(2, 3), ByteArray(6))), meta)
        assertFailsWith<IllegalArgumentException> { runner.run(wrong, "wrong") { _, _ -> } }
    }
}
