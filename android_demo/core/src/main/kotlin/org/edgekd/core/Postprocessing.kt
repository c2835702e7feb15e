package org.edgekd.core

/** The decision of docs/MANIFEST.md: p = softmax(logits / temperature); positive when p[pos] >= threshold. */
data class Prediction(
    val probabilities: List<Double>,
    val positiveProbability: Double,
    val positive: Boolean,
    val label: String,
)

object Postprocess {
    /** int8 output: x = (q - zero_point) * scale, in float64 (exact: a 9-bit integer times a float32 scale). */
    fun dequantize(q: ByteArray, quant: Quantization): DoubleArray =
        DoubleArray(q.size) { (q[it] - quant.zeroPoint) * quant.scale }

    /**
     * softmax(logits / temperature) in float64, in numpy's order of operations:
     * z = logits / T; e = exp(z - max(z)); p = e / sum(e).
     */
    fun softmax(logits: DoubleArray, temperature: Double): DoubleArray {
        require(logits.isNotEmpty()) { "no logits" }
        val z = DoubleArray(logits.size) { logits[it] / temperature }
        val m = z.max()
        val e = DoubleArray(z.size) { Math.exp(z[it] - m) }
        val total = NumpySum.sum(e)
        return DoubleArray(e.size) { e[it] / total }
    }

    fun decide(probabilities: DoubleArray, positiveIndex: Int, threshold: Double): Boolean =
        probabilities[positiveIndex] >= threshold

    /** From the model's output values (logits or probabilities, per [ModelSpec.outputKind]). */
    fun predict(spec: ModelSpec, outputs: DoubleArray): Prediction {
        require(outputs.size == spec.numClasses) { "model gave ${outputs.size} outputs for ${spec.numClasses} labels" }
        val p = if (spec.outputKind == "probabilities") outputs.copyOf() else softmax(outputs, spec.temperature)
        val positive = decide(p, spec.positiveIndex, spec.threshold)
        val label = spec.labels[if (positive) spec.positiveIndex else argmaxExcept(p, spec.positiveIndex)]
        return Prediction(p.toList(), p[spec.positiveIndex], positive, label)
    }

    /** Below the threshold the answer is the most likely of the other classes. */
    private fun argmaxExcept(p: DoubleArray, skip: Int): Int {
        var best = -1
        for (i in p.indices) if (i != skip && (best < 0 || p[i] > p[best])) best = i
        return if (best < 0) skip else best
    }
}
