package org.edgekd.core

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import org.json.JSONTokener

/**
 * The part of `manifest.json` (docs/MANIFEST.md) that an app needs: one artefact entry, which repeats
 * preprocessing, labels, positive_index, temperature and threshold, plus what `exporters.sync_demos`
 * adds for the app: the training data's name (`dataset`) and the parity gate's record (`gate`).
 *
 * JSON is parsed by org.json (built into Android; Debian's libandroid-json-java on CI). Every field
 * is read through the typed accessors of [Fields] (`string("…")`, `int("…")`, …);
 * tests/test_app_contract.py parses those calls out of this file and checks them against
 * android_demo/core/manifest_fields.json and against the manifests the exporters write.
 */
class ManifestException(message: String) : IllegalArgumentException(message)

const val SUPPORTED_MANIFEST_VERSION = 1

/** exporters.sync_demos writes this gate status for an artefact shipped with --allow-ungated. */
const val NOT_PARITY_CHECKED = "not parity-checked"

data class Quantization(val scale: Double, val zeroPoint: Int)

data class TensorSpec(
    val name: String,
    val shape: List<Int>,
    val dtype: String,
    val quantization: Quantization?,
)

data class PreprocessingSpec(
    val size: Int,
    val mean: List<Double>,
    val std: List<Double>,
    val resize: ResizeRule,
    val interpolation: String,
)

/** The parity gate's record: status "pass" (with where and when it ran) or [NOT_PARITY_CHECKED]. */
data class GateInfo(val status: String, val detail: String) {
    val parityChecked: Boolean get() = status == "pass"
}

data class ModelSpec(
    val name: String,
    val path: String,
    val format: String,
    val precision: String,
    val input: TensorSpec,
    val layout: Layout,
    val output: TensorSpec,
    val outputKind: String,
    val preprocessing: PreprocessingSpec,
    val labels: List<String>,
    val positiveIndex: Int,
    val temperature: Double,
    val threshold: Double,
    val dataset: String,
    val gate: GateInfo,
) {
    val numClasses: Int get() = labels.size
}

/** Typed, path-naming access to a JSON object. */
class Fields(private val json: JSONObject, private val where: String) {
    private fun raw(key: String): Any? {
        if (!json.has(key)) throw ManifestException("$where lacks \"$key\"")
        val v = json.opt(key)
        return if (v == null || v == JSONObject.NULL) null else v
    }

    private fun bad(key: String, want: String, got: Any?): Nothing {
        val kind = when (got) {
            null -> "null"
            is String -> "a string"
            is Number -> "the number $got"
            is Boolean -> "a boolean"
            is JSONArray -> "an array"
            is JSONObject -> "an object"
            else -> got::class.simpleName
        }
        throw ManifestException("$where.$key: expected $want, got $kind")
    }

    private fun finite(key: String, v: Any?, want: String): Double {
        val d = (v as? Number)?.toDouble() ?: bad(key, want, v)
        if (!d.isFinite()) bad(key, want, v)
        return d
    }

    private fun integer(key: String, v: Any?, want: String): Int {
        val d = finite(key, v, want)
        if (d != Math.rint(d) || Math.abs(d) > Int.MAX_VALUE) bad(key, want, v)
        return d.toInt()
    }

    fun string(key: String): String = raw(key) as? String ?: bad(key, "a string", raw(key))

    fun number(key: String): Double = finite(key, raw(key), "a finite number")

    fun int(key: String): Int = integer(key, raw(key), "an integer")

    fun obj(key: String): Fields = objOrNull(key) ?: bad(key, "an object", null)

    fun objOrNull(key: String): Fields? = when (val v = raw(key)) {
        null -> null
        is JSONObject -> Fields(v, "$where.$key")
        else -> bad(key, "an object or null", v)
    }

    fun objList(key: String): List<Fields> = list(key).mapIndexed { i, v ->
        (v as? JSONObject)?.let { Fields(it, "$where.$key[$i]") } ?: bad(key, "an array of objects", v)
    }

    fun stringList(key: String): List<String> =
        list(key).map { it as? String ?: bad(key, "an array of strings", it) }

    fun numberList(key: String): List<Double> = list(key).map { finite(key, it, "an array of finite numbers") }

    fun intList(key: String): List<Int> = list(key).map { integer(key, it, "an array of integers") }

    private fun list(key: String): List<Any?> {
        val a = raw(key) as? JSONArray ?: bad(key, "an array", raw(key))
        return List(a.length()) { i -> a.opt(i).takeUnless { it == JSONObject.NULL } }
    }

    companion object {
        /** Parse a whole JSON object (nothing but whitespace after it); errors name [source]. */
        fun parse(text: String, source: String): Fields {
            val tokener = JSONTokener(text)
            val root = try {
                tokener.nextValue()
            } catch (e: JSONException) {
                throw ManifestException("$source: invalid JSON (${e.message})")
            }
            if (root !is JSONObject) throw ManifestException("$source: not a JSON object")
            if (tokener.nextClean() != '\u0000') throw ManifestException("$source: trailing characters after the JSON object")
            return Fields(root, source)
        }
    }
}

object ManifestReader {
    /**
     * Parse `manifest.json` text and return the first artefact of [format] (or the one named [name]).
     * [source] names the file in error messages.
     */
    fun read(text: String, format: String, name: String? = null, source: String = "manifest.json"): ModelSpec {
        val top = Fields.parse(text, source)
        val version = top.int("manifest_version")
        if (version != SUPPORTED_MANIFEST_VERSION) {
            throw ManifestException("$source: manifest_version $version, this app reads $SUPPORTED_MANIFEST_VERSION")
        }
        val entries = top.objList("artifacts")
        val chosen = entries.firstOrNull { it.string("format") == format && (name == null || it.string("name") == name) }
            ?: throw ManifestException("$source: no $format artefact${name?.let { " named $it" } ?: ""}")
        return artifact(chosen)
    }

    private fun artifact(a: Fields): ModelSpec {
        val input = a.obj("input")
        val output = a.obj("output")
        val gate = a.obj("gate")
        val spec = ModelSpec(
            name = a.string("name"),
            path = a.string("path"),
            format = a.string("format"),
            precision = a.string("precision"),
            input = tensor(input),
            layout = Layout.of(input.string("layout")),
            output = tensor(output),
            outputKind = output.string("kind"),
            preprocessing = preprocessing(a.obj("preprocessing")),
            labels = a.stringList("labels"),
            positiveIndex = a.int("positive_index"),
            temperature = a.number("temperature"),
            threshold = a.number("threshold"),
            dataset = a.string("dataset"),
            gate = GateInfo(gate.string("status"), gate.string("detail")),
        )
        validate(spec)
        return spec
    }

    private fun tensor(t: Fields): TensorSpec {
        val q = t.objOrNull("quantization")
        return TensorSpec(
            name = t.string("name"),
            shape = t.intList("shape"),
            dtype = t.string("dtype"),
            quantization = q?.let { Quantization(it.number("scale"), it.int("zero_point")) },
        )
    }

    private fun preprocessing(p: Fields) = PreprocessingSpec(
        size = p.int("size"),
        mean = p.numberList("mean"),
        std = p.numberList("std"),
        resize = ResizeRule.of(p.string("resize")),
        interpolation = p.string("interpolation"),
    )

    private fun validate(s: ModelSpec) {
        fun check(ok: Boolean, what: String) {
            if (!ok) throw ManifestException("artefact ${s.name}: $what")
        }
        val p = s.preprocessing
        check(p.mean.size == 3 && p.std.size == 3, "mean and std need 3 values")
        check(p.std.all { it > 0.0 }, "std must be positive")
        check(p.interpolation == "bilinear_antialias", "interpolation ${p.interpolation} is not supported")
        val want = if (s.layout == Layout.NHWC) listOf(1, p.size, p.size, 3) else listOf(1, 3, p.size, p.size)
        check(s.input.shape == want, "input shape ${s.input.shape} does not fit ${s.layout} at size ${p.size}")
        check(s.output.shape == listOf(1, s.labels.size), "output shape ${s.output.shape} for ${s.labels.size} labels")
        check(s.input.dtype in TENSOR_DTYPES && s.output.dtype in TENSOR_DTYPES, "dtypes must be int8 or float32")
        check((s.input.dtype == "int8") == (s.input.quantization != null), "int8 input needs quantization")
        check((s.output.dtype == "int8") == (s.output.quantization != null), "int8 output needs quantization")
        check(s.input.quantization?.scale?.let { it > 0.0 } ?: true, "input scale must be positive")
        check(s.outputKind == "logits" || s.outputKind == "probabilities", "output kind ${s.outputKind}")
        check(s.positiveIndex in s.labels.indices, "positive_index ${s.positiveIndex} out of range")
        check(s.temperature > 0.0, "temperature must be positive")
        check(s.threshold in 0.0..1.0, "threshold must lie in [0, 1]")
        check(s.dataset.isNotBlank(), "dataset must name the training data")
        check(s.gate.status == "pass" || s.gate.status == NOT_PARITY_CHECKED, "gate status \"${s.gate.status}\"")
    }

    private val TENSOR_DTYPES = setOf("int8", "float32")
}
