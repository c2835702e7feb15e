package org.edgekd.demo

import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import org.edgekd.core.ManifestReader
import org.edgekd.core.ParityRunner
import org.junit.Assume.assumeTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.tensorflow.lite.Interpreter
import java.io.File

/**
 * On-device parity, driven by benchmarks/android/parity.py (see docs/ANDROID_BENCHMARK.md):
 *
 *     adb shell am instrument -w -e class org.edgekd.demo.ParityTest \
 *         -e model /data/local/tmp/edgekd/m.tflite -e inputs /data/local/tmp/edgekd/inputs.safetensors \
 *         -e outputs /sdcard/Android/data/org.edgekd.demo/files/edgekd/outputs.safetensors \
 *         org.edgekd.demo.test/androidx.test.runner.AndroidJUnitRunner
 *
 * `inputs` is a safetensors file of preprocessed (and, for int8 models, quantized) tensors; every
 * sample runs as one batch-1 call and the raw output tensors go to `outputs` as a safetensors file
 * (org.edgekd.core.ParityRunner, Safetensors). Without
 * `model` the app's bundled model runs. `threads` (default 1) sets the interpreter's threads.
 * Without `inputs` the test is skipped, so `./gradlew connectedAndroidTest` passes on its own.
 */
@RunWith(AndroidJUnit4::class)
class ParityTest {
    @Test
    fun runPushedInputs() {
        val args = InstrumentationRegistry.getArguments()
        val inputsArg: String? = args.getString("inputs")
        assumeTrue("no -e inputs given: nothing to run", inputsArg != null)
        val inputs: String = inputsArg!!
        val context = InstrumentationRegistry.getInstrumentation().targetContext
        val appFiles = checkNotNull(context.getExternalFilesDir(null)) { "no external files dir" }
        val outputs = File(args.getString("outputs") ?: File(appFiles, "edgekd/outputs.safetensors").path)
        val threads = args.getString("threads")?.toInt() ?: 1
        val model = args.getString("model")?.let { Classifier.mapFile(File(it)) } ?: run {
            val manifest = context.assets.open(Classifier.MANIFEST_ASSET).bufferedReader().use { it.readText() }
            Classifier.mapAsset(context, ManifestReader.read(manifest, "tflite").path)
        }
        Interpreter(model, Interpreter.Options().setNumThreads(threads)).use { interpreter ->
            val runner = ParityRunner(
                Classifier.tensorInfo(interpreter.getInputTensor(0)),
                Classifier.tensorInfo(interpreter.getOutputTensor(0)),
            )
            val result = runner.run(File(inputs).readBytes(), inputs) { i, o -> interpreter.run(i, o) }
            outputs.parentFile?.mkdirs()
            val tmp = File(outputs.path + ".tmp")
            tmp.writeBytes(result)
            check(tmp.renameTo(outputs)) { "cannot write $outputs" }
        }
    }
}
