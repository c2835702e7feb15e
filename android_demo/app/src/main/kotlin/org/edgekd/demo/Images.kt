package org.edgekd.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.net.Uri
import org.edgekd.core.DecodePlan
import org.edgekd.core.ImageKinds
import org.edgekd.core.PixelSource
import org.edgekd.core.RgbaBufferSource
import java.io.IOException
import java.io.InputStream
import java.nio.ByteBuffer

/** A decoded photo: a small copy for the screen and the full-resolution pixels for the model. */
class Photo(val display: Bitmap, val pixels: PixelSource, val sampleSize: Int)

/**
 * Image decoding, kept as close to kd_core.data.transforms.load_rgb (PIL) as Android allows:
 * the kinds Python refuses (greyscale, palette, CMYK, alpha) are refused from the file's header
 * before anything is decoded (org.edgekd.core.ImageKinds); no EXIF rotation, no colour-space
 * conversion, full resolution (the core does the resize), transparent pixels refused. PNGs decode
 * to identical pixels; JPEG decoders may differ from PIL's libjpeg by a unit in a few pixels.
 *
 * Memory: the full-resolution Bitmap (premultiplied, the default, so Compose can draw it; opaque
 * pixels are the same either way) is copied once into a direct buffer with copyPixelsToBuffer (raw
 * values, no conversion) and then released; the screen gets a copy of at most
 * DecodePlan.DISPLAY_SIDE pixels a side (a > 100 MB Bitmap would overflow RecordingCanvas). At most
 * two full-resolution copies exist, briefly. Photos over DecodePlan.MAX_PIXELS are decoded at
 * 1/2, 1/4, ... resolution by the decoder; the app says so.
 */
object Images {
    fun load(resolver: ContentResolver, uri: Uri, source: String): Photo {
        open(resolver, uri, source).use { ImageKinds.requireRgb(it, source) }
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        open(resolver, uri, source).use { BitmapFactory.decodeStream(it, null, bounds) }
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw IOException("$source: cannot decode image")
        val sample = DecodePlan.sampleSize(bounds.outWidth, bounds.outHeight)
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inScaled = false
            inSampleSize = sample
        }
        return try {
            val decoded = open(resolver, uri, source).use { BitmapFactory.decodeStream(it, null, options) }
                ?: throw IOException("$source: cannot decode image")
            split(decoded, source, sample)
        } catch (e: OutOfMemoryError) {
            throw IOException("$source: a ${bounds.outWidth} x ${bounds.outHeight} photo does not fit in this phone's memory")
        }
    }

    private fun open(resolver: ContentResolver, uri: Uri, source: String): InputStream =
        resolver.openInputStream(uri) ?: throw IOException("$source: cannot open")

    /** The screen copy and the model's pixels; the full-resolution Bitmap is recycled. */
    private fun split(decoded: Bitmap, source: String, sample: Int): Photo {
        var full = decoded
        if (full.config != Bitmap.Config.ARGB_8888) { // for example RGBA_F16 from a 16-bit PNG
            full = decoded.copy(Bitmap.Config.ARGB_8888, false) ?: throw IOException("$source: cannot convert pixels")
            decoded.recycle()
        }
        val (w, h) = DecodePlan.displaySize(full.width, full.height)
        val display = if (w == full.width && h == full.height) full else Bitmap.createScaledBitmap(full, w, h, true)
        val raw = ByteBuffer.allocateDirect(full.rowBytes * full.height)
        full.copyPixelsToBuffer(raw)
        val pixels = RgbaBufferSource(full.width, full.height, raw, full.rowBytes, source)
        if (display !== full) full.recycle()
        return Photo(display, pixels, sample)
    }
}
