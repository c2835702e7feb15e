package org.edgekd.demo

import android.graphics.Bitmap
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.compose.setContent
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
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
import androidx.compose.runtime.DisposableEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.res.stringResource
import androidx.compose.ui.text.font.FontWeight
import androidx.compose.ui.unit.dp
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import java.util.Locale

class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent {
            MaterialTheme {
                Surface(Modifier.fillMaxSize()) { DemoScreen() }
            }
        }
    }
}

private sealed interface UiState {
    data object Idle : UiState
    data object Running : UiState
    data class Done(val result: Classification) : UiState
    data class Failed(val message: String) : UiState
}

@Composable
fun DemoScreen() {
    val context = LocalContext.current
    val scope = rememberCoroutineScope()
    // The classifier loads once, off the main thread, and closes with the screen.
    var classifier by remember { mutableStateOf<Result<Classifier>?>(null) }
    var photo by remember { mutableStateOf<Bitmap?>(null) }
    var state by remember { mutableStateOf<UiState>(UiState.Idle) }

    DisposableEffect(Unit) {
        val job = scope.launch {
            classifier = withContext(Dispatchers.Default) { runCatching { Classifier.load(context) } }
        }
        onDispose {
            job.cancel()
            classifier?.getOrNull()?.close()
        }
    }

    // Decode, preprocess and run on a worker thread; update the screen on the main thread.
    fun classifyPhoto(load: () -> Bitmap) {
        val model = classifier?.getOrNull() ?: return
        state = UiState.Running
        scope.launch {
            try {
                val (bitmap, result) = withContext(Dispatchers.Default) {
                    val bitmap = load()
                    Pair(bitmap, model.classify(Images.toRgb(bitmap)))
                }
                photo = bitmap
                state = UiState.Done(result)
            } catch (e: Exception) {
                state = UiState.Failed(e.message ?: e.toString())
            }
        }
    }

    val picker = rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) classifyPhoto { Images.decode(context.contentResolver, uri) }
    }
    val camera = rememberLauncherForActivityResult(ActivityResultContracts.TakePicturePreview()) { bitmap ->
        if (bitmap != null) classifyPhoto { bitmap }
    }

    Column(
        Modifier.fillMaxSize().safeDrawingPadding().verticalScroll(rememberScrollState()).padding(16.dp),
        verticalArrangement = Arrangement.spacedBy(12.dp),
    ) {
        Text(stringResource(R.string.app_name), style = MaterialTheme.typography.headlineSmall)
        NoticeCard()
        val ready = classifier?.isSuccess == true && state != UiState.Running
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Button(
                onClick = { picker.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly)) },
                enabled = ready,
            ) { Text(stringResource(R.string.pick_photo)) }
            OutlinedButton(onClick = { camera.launch(null) }, enabled = ready) {
                Text(stringResource(R.string.take_photo))
            }
        }
        classifier?.exceptionOrNull()?.let { ErrorText("Model not loaded: ${it.message}") }
        classifier?.getOrNull()?.let { ModelLine(it) }
        photo?.let {
            Image(
                it.asImageBitmap(),
                contentDescription = "selected photo",
                modifier = Modifier.fillMaxWidth().heightIn(max = 320.dp),
            )
        }
        when (val s = state) {
            UiState.Idle -> Text(stringResource(R.string.no_image))
            UiState.Running -> Text("Running…")
            is UiState.Done -> classifier?.getOrNull()?.let { ResultCard(it, s.result) }
            is UiState.Failed -> ErrorText(s.message)
        }
    }
}

@Composable
private fun NoticeCard() {
    Card(colors = CardDefaults.cardColors(containerColor = MaterialTheme.colorScheme.errorContainer)) {
        Text(
            stringResource(R.string.notice),
            Modifier.padding(12.dp),
            color = MaterialTheme.colorScheme.onErrorContainer,
            fontWeight = FontWeight.Bold,
        )
    }
}

@Composable
private fun ModelLine(model: Classifier) {
    val s = model.spec
    Text("Model: ${s.name} (${s.precision}, ${s.preprocessing.size} px, ${s.preprocessing.resize.id})",
        style = MaterialTheme.typography.bodySmall)
}

@Composable
private fun ResultCard(model: Classifier, result: Classification) {
    val s = model.spec
    val p = result.prediction
    val positiveLabel = s.labels[s.positiveIndex]
    Card(Modifier.fillMaxWidth()) {
        Column(Modifier.padding(12.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
            Text("P($positiveLabel) = ${fmt(p.positiveProbability, 3)}", style = MaterialTheme.typography.titleLarge)
            val verdict = if (p.positive) "at or above" else "below"
            Text(
                "Decision: ${p.label} ($verdict the threshold ${fmt(s.threshold, 3)})",
                fontWeight = FontWeight.Bold,
            )
            Text("Inference: ${fmt(result.inferenceMs, 1)} ms  (preprocessing ${fmt(result.preprocessMs, 1)} ms)")
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
