package org.edgekd.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.net.Uri
import org.edgekd.core.RgbImage
import java.io.IOException
import java.nio.ByteBuffer

/**
 * Image decoding, kept as close to kd_core.data.transforms.load_rgb (PIL) as Android allows:
 * full resolution (the core module does the resize), no EXIF rotation, no colour-space conversion,
 * images with transparent pixels refused. PNGs decode to identical pixels; JPEG decoders may differ
 * from PIL's libjpeg by a unit in a few pixels.
 */
object Images {
    fun decode(resolver: ContentResolver, uri: Uri): Bitmap {
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inScaled = false
            inPremultiplied = false
        }
        val bitmap = resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, options) }
        return bitmap ?: throw IOException("$uri: cannot decode image")
    }

    /** The Bitmap's raw 8-bit RGB values (copyPixelsToBuffer: no colour-space conversion). */
    fun toRgb(bitmap: Bitmap): RgbImage {
        val argb8888 = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap else bitmap.copy(Bitmap.Config.ARGB_8888, false)
        val w = argb8888.width
        val h = argb8888.height
        val row = argb8888.rowBytes
        val raw = ByteBuffer.allocate(row * h)
        argb8888.copyPixelsToBuffer(raw)
        val rgba = ByteArray(w * h * 4)
        for (y in 0 until h) System.arraycopy(raw.array(), y * row, rgba, y * w * 4, w * 4)
        for (i in 3 until rgba.size step 4) {
            if (rgba[i] != 0xFF.toByte()) throw IOException("image has transparent pixels; expected plain RGB")
        }
        return RgbImage.fromRgba(w, h, rgba)
    }
}
