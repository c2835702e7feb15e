package org.edgekd.core

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import org.json.JSONTokener
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * The safetensors format (huggingface/safetensors, public spec), used for the on-device parity
 * tensors (benchmarks/android/parity.py writes and reads it with the `safetensors` package):
 *
 *     bytes 0..7   N, uint64 little-endian: length of the JSON header
 *     bytes 8..    N bytes of UTF-8 JSON (space-padded): {"NAME": {"dtype": "F32", "shape": [..],
 *                  "data_offsets": [begin, end]}, ..., "__metadata__": {"key": "string", ...}}
 *     then         the byte buffer: each tensor C order, little-endian, at its offsets
 *
 * Offsets are relative to the byte buffer, and the tensors cover it without holes or overlaps.
 */
class NamedTensor(val name: String, val dtype: String, val shape: List<Int>, val data: ByteArray) {
    val samples: Int get() = shape[0]
    val sampleBytes: Int get() = if (samples == 0) 0 else data.size / samples

    fun sample(i: Int): ByteArray = data.copyOfRange(i * sampleBytes, (i + 1) * sampleBytes)
}

class SafetensorsFile(val tensors: Map<String, NamedTensor>, val metadata: Map<String, String>) {
    fun tensor(name: String, source: String): NamedTensor =
        tensors[name] ?: throw IllegalArgumentException("$source: no tensor \"$name\" (has ${tensors.keys})")
}

object Safetensors {
    /** Our dtype names (numpy's) -> safetensors codes; element sizes in [SIZES]. */
    val CODES = mapOf("float32" to "F32", "float16" to "F16", "int8" to "I8", "uint8" to "U8")
    val SIZES = mapOf("float32" to 4, "float16" to 2, "int8" to 1, "uint8" to 1)
    private const val MAX_HEADER = 100_000_000L

    fun decode(bytes: ByteArray, source: String = "tensor file"): SafetensorsFile {
        fun fail(what: String): Nothing = throw IllegalArgumentException("$source: not a safetensors file ($what)")
        if (bytes.size < 8) fail("${bytes.size} bytes")
        val n = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).long
        if (n < 2 || n > MAX_HEADER || 8 + n > bytes.size) fail("header length $n for ${bytes.size} bytes")
        val text = String(bytes, 8, n.toInt(), Charsets.UTF_8)
        val header = try {
            JSONTokener(text).let { t -> (t.nextValue() as? JSONObject)?.takeIf { t.nextClean() == '\u0000' } }
        } catch (e: JSONException) {
            null
        } ?: fail("bad JSON header")
        val start = 8 + n.toInt()
        val tensors = LinkedHashMap<String, NamedTensor>()
        val spans = ArrayList<Pair<Long, Long>>()
        for (name in header.keys()) {
            if (name == "__metadata__") continue
            val t = header.optJSONObject(name) ?: fail("entry $name is not an object")
            val (tensor, span) = entry(name, t, bytes, start, ::fail)
            tensors[name] = tensor
            spans.add(span)
        }
        spans.sortBy { it.first }
        var at = 0L
        for ((b, e) in spans) {
            if (b != at) fail("tensor data has a hole or an overlap at byte $at")
            at = e
        }
        if (at != (bytes.size - start).toLong()) fail("${bytes.size - start} data bytes, tensors cover $at")
        return SafetensorsFile(tensors, metadata(header, ::fail))
    }

    private fun entry(
        name: String, t: JSONObject, bytes: ByteArray, start: Int, fail: (String) -> Nothing,
    ): Pair<NamedTensor, Pair<Long, Long>> {
        val code = t.optString("dtype")
        val dtype = CODES.entries.firstOrNull { it.value == code }?.key ?: fail("tensor $name has unsupported dtype $code")
        val shapeJson = t.optJSONArray("shape") ?: fail("tensor $name has no shape")
        val shape = List(shapeJson.length()) { shapeJson.optLong(it, -1).toInt().also { d -> if (d < 0) fail("bad shape") } }
        val offsets = t.optJSONArray("data_offsets")?.takeIf { it.length() == 2 } ?: fail("tensor $name has no data_offsets")
        val b = offsets.optLong(0, -1)
        val e = offsets.optLong(1, -1)
        val want = shape.fold(1L) { a, d -> a * d } * SIZES.getValue(dtype)
        if (b < 0 || e < b || e - b != want || start + e > bytes.size) {
            fail("tensor $name: offsets [$b, $e] do not hold $dtype $shape")
        }
        val data = bytes.copyOfRange(start + b.toInt(), start + e.toInt())
        return Pair(NamedTensor(name, dtype, shape, data), Pair(b, e))
    }

    private fun metadata(header: JSONObject, fail: (String) -> Nothing): Map<String, String> {
        val meta = header.opt("__metadata__") ?: return emptyMap()
        val obj = meta as? JSONObject ?: fail("__metadata__ is not an object")
        return obj.keys().asSequence().associateWith { k -> obj.opt(k) as? String ?: fail("__metadata__.$k is not a string") }
    }

    /** One file holding [tensors] (data: little-endian C-order bytes) and string [metadata]. */
    fun encode(tensors: List<NamedTensor>, metadata: Map<String, String>): ByteArray {
        val header = JSONObject()
        if (metadata.isNotEmpty()) header.put("__metadata__", JSONObject(metadata as Map<*, *>))
        var at = 0L
        for (t in tensors) {
            val code = CODES[t.dtype] ?: throw IllegalArgumentException("unsupported dtype ${t.dtype}")
            require(t.data.size.toLong() == t.shape.fold(1L) { a, d -> a * d } * SIZES.getValue(t.dtype)) {
                "tensor ${t.name}: ${t.data.size} bytes do not hold ${t.dtype} ${t.shape}"
            }
            header.put(t.name, JSONObject().put("dtype", code).put("shape", JSONArray(t.shape))
                .put("data_offsets", JSONArray(listOf(at, at + t.data.size))))
            at += t.data.size
        }
        val text = StringBuilder(header.toString())
        while ((8 + text.toString().toByteArray(Charsets.UTF_8).size) % 8 != 0) text.append(' ')
        val head = text.toString().toByteArray(Charsets.UTF_8)
        val out = ByteBuffer.allocate(8 + head.size + at.toInt()).order(ByteOrder.LITTLE_ENDIAN)
        out.putLong(head.size.toLong()).put(head)
        tensors.forEach { out.put(it.data) }
        return out.array()
    }
}
