package org.edgekd.demo

import android.app.Application
import android.graphics.Bitmap
import android.net.Uri
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.setValue
import androidx.core.content.FileProvider
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import java.io.File

sealed interface ModelState {
    data object Loading : ModelState
    data class Ready(val classifier: Classifier) : ModelState
    data class Failed(val message: String) : ModelState
}

sealed interface UiState {
    data object Idle : UiState
    data object Running : UiState
    data class Done(val result: Classification, val sampleSize: Int) : UiState
    data class Failed(val message: String) : UiState
}

/**
 * The screen's state, kept across rotation and other configuration changes (a ViewModel): the
 * model loads once, off the main thread; the photo and the result survive a rotation. A new pick
 * clears the previous photo and result at once, and a classification still running for an older
 * pick is cancelled so its result never shows. The classifier is closed when the screen is gone
 * for good, on a background thread that waits for a running classification (Classifier is
 * synchronized).
 */
class DemoViewModel(app: Application) : AndroidViewModel(app) {
    var model by mutableStateOf<ModelState>(ModelState.Loading)
        private set
    var photo by mutableStateOf<Bitmap?>(null)
        private set
    var state by mutableStateOf<UiState>(UiState.Idle)
        private set
    private var job: Job? = null
    private var loaded: Classifier? = null // guarded by this: closed by onCleared, even mid-load
    private var cleared = false

    init {
        viewModelScope.launch {
            model = withContext(Dispatchers.IO) {
                try {
                    ModelState.Ready(keep(Classifier.load(app)))
                } catch (e: Exception) {
                    ModelState.Failed(e.message ?: e.toString())
                }
            }
        }
    }

    private fun keep(classifier: Classifier): Classifier = synchronized(this) {
        if (cleared) classifier.close() else loaded = classifier
        classifier
    }

    /** Where the camera app writes a full-resolution photo (res/xml/file_paths.xml). */
    fun cameraUri(): Uri {
        val app = getApplication<Application>()
        val file = File(app.cacheDir, "camera/photo.jpg").apply { parentFile?.mkdirs() }
        return FileProvider.getUriForFile(app, "${app.packageName}.fileprovider", file)
    }

    fun classify(uri: Uri, source: String) {
        val classifier = (model as? ModelState.Ready)?.classifier ?: run {
            // For example a camera result delivered to a recreated process while the model loads.
            failed("The model is not loaded yet: pick or take the photo again in a moment")
            return
        }
        job?.cancel()
        photo = null
        state = UiState.Running
        job = viewModelScope.launch {
            try {
                val resolver = getApplication<Application>().contentResolver
                val (image, done) = withContext(Dispatchers.Default) {
                    val p = Images.load(resolver, uri, source)
                    Pair(p.display, UiState.Done(classifier.classify(p.pixels), p.sampleSize))
                }
                photo = image
                state = done
            } catch (e: CancellationException) {
                throw e
            } catch (e: Exception) {
                state = UiState.Failed(e.message ?: e.toString())
            } catch (e: OutOfMemoryError) {
                state = UiState.Failed("$source: the photo does not fit in this phone's memory")
            }
        }
    }

    fun failed(message: String) {
        job?.cancel()
        photo = null
        state = UiState.Failed(message)
    }

    override fun onCleared() {
        val classifier = synchronized(this) {
            cleared = true
            loaded
        } ?: return
        Thread({ classifier.close() }, "edgekd-close").start()
    }
}
