package org.edgekd.core

import java.util.Locale

/**
 * What the app says about a result, in screening language: the score is above or below the
 * model's referral threshold, which was set for high sensitivity, so most lesions above it are not
 * melanoma and a lesion below it is not ruled out. Never a diagnosis, never a bare class name.
 * ios_demo/EdgeKDDemo/ContentView.swift says the same words (tests/test_app_contract.py).
 */
object Screening {
    const val NOTICE = "Research demo, not a medical device. It has not been clinically validated and " +
        "must not be used to diagnose skin cancer or to rule it out. See a clinician (a dermatologist) " +
        "about any skin lesion that worries you."
    const val ABOVE = "Above the model's referral threshold"
    const val BELOW = "Below the model's referral threshold"
    const val ABOVE_ADVICE = "The model would refer this lesion for review. Most lesions above the " +
        "threshold are not melanoma: see a clinician to have it checked."
    const val BELOW_ADVICE = "This does not rule out melanoma. See a clinician about any lesion that " +
        "is new, changing, bleeding or worries you."
    const val NOT_CHECKED = "NOT parity-checked"

    fun headline(p: Prediction): String = if (p.positive) ABOVE else BELOW

    fun advice(p: Prediction): String = if (p.positive) ABOVE_ADVICE else BELOW_ADVICE

    fun score(spec: ModelSpec, p: Prediction): String =
        "Model score for ${spec.labels[spec.positiveIndex]}: ${fmt(p.positiveProbability)} " +
            "(referral threshold ${fmt(spec.threshold)})"

    fun trainedOn(spec: ModelSpec): String = "Trained on: ${spec.dataset}"

    fun gate(spec: ModelSpec): String =
        if (spec.gate.parityChecked) "Parity-checked: ${spec.gate.detail}" else "$NOT_CHECKED: ${spec.gate.detail}"

    /** Shown when a large photo was decoded at reduced resolution (DecodePlan.sampleSize > 1). */
    fun reduced(sampleSize: Int): String =
        "Decoded at 1/$sampleSize resolution (a very large photo): the model input may differ " +
            "slightly from the host's."

    private fun fmt(x: Double): String = String.format(Locale.US, "%.3f", x)
}
