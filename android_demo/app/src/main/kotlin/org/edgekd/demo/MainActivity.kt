package org.edgekd.demo

import android.content.ActivityNotFoundException
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.compose.setContent
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.activity.viewModels
import androidx.compose.foundation.Image
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.heightIn
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.safeDrawingPadding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.CardDefaults
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.res.stringResource
import androidx.compose.ui.text.font.FontWeight
import androidx.compose.ui.unit.dp
import org.edgekd.core.Screening
import java.util.Locale

class MainActivity : ComponentActivity() {
    private val model: DemoViewModel by viewModels()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent {
            MaterialTheme {
                Surface(Modifier.fillMaxSize()) { DemoScreen(model) }
            }
        }
    }
}

@Composable
fun DemoScreen(vm: DemoViewModel) {
    val picker = rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) vm.classify(uri, "the picked photo")
    }
    // TakePicture: the camera app writes the full-resolution photo to our FileProvider file
    // (TakePicturePreview would hand back a thumbnail).
    val camera = rememberLauncherForActivityResult(ActivityResultContracts.TakePicture()) { saved ->
        if (saved) vm.classify(vm.cameraUri(), "the camera photo")
    }
    Column(
        Modifier.fillMaxSize().safeDrawingPadding().verticalScroll(rememberScrollState()).padding(16.dp),
        verticalArrangement = Arrangement.spacedBy(12.dp),
    ) {
        Text(stringResource(R.string.app_name), style = MaterialTheme.typography.headlineSmall)
        WarningCard(Screening.NOTICE)
        val ready = vm.model is ModelState.Ready && vm.state != UiState.Running
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Button(
                onClick = { picker.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly)) },
                enabled = ready,
            ) { Text(stringResource(R.string.pick_photo)) }
            OutlinedButton(
                onClick = {
                    try {
                        camera.launch(vm.cameraUri())
                    } catch (e: ActivityNotFoundException) {
                        vm.failed("No camera app is installed")
                    }
                },
                enabled = ready,
            ) { Text(stringResource(R.string.take_photo)) }
        }
        when (val m = vm.model) {
            ModelState.Loading -> Text("Loading the model…")
            is ModelState.Failed -> ErrorText("Model not loaded: ${m.message}")
            is ModelState.Ready -> ModelLines(m.classifier)
        }
        vm.photo?.let {
            Image(
                it.asImageBitmap(),
                contentDescription = "selected photo",
                modifier = Modifier.fillMaxWidth().heightIn(max = 320.dp),
            )
        }
        when (val s = vm.state) {
            UiState.Idle -> Text(stringResource(R.string.no_image))
            UiState.Running -> Text("Running…")
            is UiState.Done -> (vm.model as? ModelState.Ready)?.let { ResultCard(it.classifier, s) }
            is UiState.Failed -> ErrorText(s.message)
        }
    }
}

@Composable
private fun WarningCard(text: String) {
    Card(colors = CardDefaults.cardColors(containerColor = MaterialTheme.colorScheme.errorContainer)) {
        Text(text, Modifier.padding(12.dp), color = MaterialTheme.colorScheme.onErrorContainer, fontWeight = FontWeight.Bold)
    }
}

/** Which model, what it was trained on, and whether the parity gate passed it. */
@Composable
private fun ModelLines(model: Classifier) {
    val s = model.spec
    Text("Model: ${s.name} (${s.precision}, ${s.preprocessing.size} px, ${s.preprocessing.resize.id})",
        style = MaterialTheme.typography.bodySmall)
    Text(Screening.trainedOn(s), style = MaterialTheme.typography.bodySmall)
    if (s.gate.parityChecked) {
        Text(Screening.gate(s), style = MaterialTheme.typography.bodySmall)
    } else {
        WarningCard(Screening.gate(s))
    }
}

@Composable
private fun ResultCard(model: Classifier, done: UiState.Done) {
    val s = model.spec
    val p = done.result.prediction
    Card(Modifier.fillMaxWidth()) {
        Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
            Text(Screening.headline(p), style = MaterialTheme.typography.titleLarge, fontWeight = FontWeight.Bold)
            Text(Screening.score(s, p))
            Text(Screening.advice(p), fontWeight = FontWeight.Bold)
            if (done.sampleSize > 1) Text(Screening.reduced(done.sampleSize), style = MaterialTheme.typography.bodySmall)
            Text("Inference: ${fmt(done.result.inferenceMs, 1)} ms  (preprocessing ${fmt(done.result.preprocessMs, 1)} ms)",
                style = MaterialTheme.typography.bodySmall)
            Text("Temperature ${fmt(s.temperature, 2)}; probabilities ${p.probabilities.joinToString { fmt(it, 3) }}",
                style = MaterialTheme.typography.bodySmall)
        }
    }
}

@Composable
private fun ErrorText(message: String) {
    Text(message, color = MaterialTheme.colorScheme.error)
}

private fun fmt(x: Double, digits: Int): String = String.format(Locale.US, "%.${digits}f", x)
