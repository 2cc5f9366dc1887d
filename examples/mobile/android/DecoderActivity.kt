// kerasvae on Android: one image from an exported TFLite decoder (`kerasvae export RUN --to DIR --tflite ...`).
//
// NOT COMPILED in this repository: there is no Android toolchain here, so nothing builds or tests this file.
// It is a snippet to copy into an app. Its API names were checked against the libraries' sources, not
// against a build. Written against:
//   - LiteRT's Kotlin CompiledModel API, Maven `com.google.ai.edge.litert:litert:2.1.0` or newer (the
//     LiteRT guide ai.google.dev/edge/litert/next/android_kotlin shows 2.1.0 to 2.3.0). Names checked in
//     google-ai-edge/LiteRT, litert/kotlin/src/main/kotlin/com/google/ai/edge/litert/:
//       Model.kt: CompiledModel.create(AssetManager, String, Options), CompiledModel.Options(Accelerator.CPU),
//         createInputBuffer(name, signature), createOutputBuffer(name, signature),
//         run(Map, Map, signature), createInputBuffers(), createOutputBuffers(), run(List, List), close().
//       TensorBuffer.kt: writeFloat, writeInt, readFloat, close. Common.kt: Accelerator.CPU.
//   - The Interpreter API, org.tensorflow.lite.Interpreter.runSignature(inputs, outputs, signatureKey).
//     It is in the same artifact from LiteRT 2.1 (CPU only) and in com.google.ai.edge.litert:litert:1.x.
//   - org.json.JSONObject and android.graphics.Bitmap from the Android SDK (minSdk 23 for LiteRT 2.1).
//
// Assets (../README.md): app/src/main/assets/model.json plus the batch-1 decoder that model.json's
// recommended_mode names, e.g. decoder_dynamic.tflite.
//
// The files: every .tflite has one signature, "decode", with static shapes. Its input is z float32
// [1, latent_dim]; conditional models also take label int32 [1]. Its outputs are mean float32
// [1, H, W, C], NHWC, in [0, 1], plus the likelihood's parameters ("logits" for a Bernoulli decoder).
// The int8 files also take and return float32. A decoder_<mode>_b16.tflite file takes z [16, latent_dim]
// row by row and returns 16 images.
package com.example.kerasvae

import android.app.Activity
import android.content.Context
import android.graphics.Bitmap
import android.os.Bundle
import android.widget.ImageView
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.Random
import kotlin.math.roundToInt
import org.json.JSONObject
import org.tensorflow.lite.Interpreter

const val SIGNATURE = "decode"

/** What the app needs from model.json. */
class DecoderInfo(json: JSONObject, mode: String? = null) {
  val latentDim: Int = json.getInt("latent_dim")
  private val shape = json.getJSONArray("input_shape") // [H, W, C] for images
  val height: Int = shape.getInt(0)
  val width: Int = shape.getInt(1)
  val channels: Int = shape.getInt(2)
  val imageSize: Int get() = height * width * channels

  /** Conditional models (num_classes not null) also take `label`. */
  val numClasses: Int? = if (json.isNull("num_classes")) null else json.getInt("num_classes")

  /** model.json's recommended_mode: the smallest file within 40 dB PSNR of the SavedModel. */
  val mode: String = mode ?: json.getString("recommended_mode")

  private val decoder = json.getJSONObject("decoder")

  /** The batch-1 file of this mode, e.g. "decoder_dynamic.tflite". Use "16" for the _b16 file. */
  val file: String = decoder.getJSONObject("files").getJSONObject(this.mode).getJSONObject("1").getString("file")

  /** The output names of `decode`, e.g. [mean, logits]. */
  val outputNames: List<String> = decoder.getJSONObject("outputs").keys().asSequence().toList()

  companion object {
    fun fromAssets(context: Context, mode: String? = null): DecoderInfo =
      DecoderInfo(JSONObject(context.assets.open("model.json").bufferedReader().use { it.readText() }), mode)
  }
}

/** z ~ N(0, I), the prior of a model.json with "prior": "normal", reproducible from a seed. */
fun sampleZ(latentDim: Int, seed: Long): FloatArray {
  val random = Random(seed)
  return FloatArray(latentDim) { random.nextGaussian().toFloat() }
}

/**
 * The decoder through LiteRT's CompiledModel API, with buffers looked up by signature name. Keep one
 * instance and call decode() as often as you like; close() frees the native buffers.
 */
class CompiledDecoder(context: Context, private val info: DecoderInfo) : AutoCloseable {
  private val model =
    CompiledModel.create(context.assets, info.file, CompiledModel.Options(Accelerator.CPU))

  private val inputs: Map<String, TensorBuffer> = buildMap {
    put("z", model.createInputBuffer("z", SIGNATURE))
    if (info.numClasses != null) put("label", model.createInputBuffer("label", SIGNATURE))
  }

  // run(Map, Map, signature) needs a buffer for every output of the signature, not only `mean`: LiteRT
  // rejects a map that misses one ("The given map is missing some output TensorBuffers", as checked with
  // the Python CompiledModel.run_by_name on the exported files).
  private val outputs: Map<String, TensorBuffer> =
    info.outputNames.associateWith { model.createOutputBuffer(it, SIGNATURE) }

  /** `mean` for one z: H*W*C floats in [0, 1], NHWC (row by row, channels innermost). */
  fun decode(z: FloatArray, label: Int = 0): FloatArray {
    require(z.size == info.latentDim) { "z needs latent_dim = ${info.latentDim} values, got ${z.size}" }
    inputs.getValue("z").writeFloat(z)
    inputs["label"]?.writeInt(intArrayOf(label))
    model.run(inputs, outputs, SIGNATURE)
    return outputs.getValue("mean").readFloat()
  }

  override fun close() {
    (inputs.values + outputs.values).forEach { it.close() }
    model.close()
  }
}

/**
 * The same call with index-based buffers, as in LiteRT's guide. Output buffers come in the subgraph's
 * output order. Python's `CompiledModel.from_file(path).get_signature_list()` prints that order; the
 * Interpreter's get_signature_list() sorts the names and does not. kerasvae's Bernoulli decoders list
 * [logits, mean], so `mean` is buffer 1. The encoders list [scale, loc], which shows the order is not
 * alphabetical in general. model.json's tensors[...].index is the tensor's index in the subgraph
 * (e.g. 23), not this position. Prefer CompiledDecoder, which looks buffers up by name; conditional
 * models must use it.
 */
const val MEAN_OUTPUT_POSITION = 1

fun decodeByIndex(context: Context, info: DecoderInfo, z: FloatArray): FloatArray =
  CompiledModel.create(context.assets, info.file, CompiledModel.Options(Accelerator.CPU)).use { model ->
    val inputBuffers = model.createInputBuffers() // signature 0, the file's only one: [z]
    val outputBuffers = model.createOutputBuffers() // [logits, mean]
    try {
      inputBuffers[0].writeFloat(z)
      model.run(inputBuffers, outputBuffers)
      outputBuffers[MEAN_OUTPUT_POSITION].readFloat()
    } finally {
      (inputBuffers + outputBuffers).forEach { it.close() }
    }
  }

/**
 * The same through the Interpreter API, by signature name ("z" in, "mean" out). runSignature copies
 * out only the outputs you pass.
 */
fun decodeWithInterpreter(context: Context, info: DecoderInfo, z: FloatArray): FloatArray {
  // A direct buffer holding the whole file avoids memory-mapping, which fails on compressed assets.
  val bytes = context.assets.open(info.file).use { it.readBytes() }
  val modelBuffer = ByteBuffer.allocateDirect(bytes.size).order(ByteOrder.nativeOrder())
  modelBuffer.put(bytes).rewind()
  Interpreter(modelBuffer, Interpreter.Options().setNumThreads(1)).use { interpreter ->
    val mean = ByteBuffer.allocateDirect(4 * info.imageSize).order(ByteOrder.nativeOrder())
    interpreter.runSignature(
      mapOf<String, Any>("z" to arrayOf(z)), // float32 [1, latent_dim]
      mapOf<String, Any>("mean" to mean), // float32 [1, H, W, C]
      SIGNATURE,
    )
    mean.rewind()
    return FloatArray(info.imageSize).also { mean.asFloatBuffer().get(it) }
  }
}

/**
 * `mean` [1, H, W, C] as an ARGB_8888 bitmap: grey = round(255 * p) for C = 1, RGB for C = 3. It is
 * scaled up `scale` times with nearest-neighbour filtering, so the pixels stay crisp.
 */
fun toBitmap(mean: FloatArray, info: DecoderInfo, scale: Int = 16): Bitmap {
  val c = info.channels
  fun level(i: Int): Int = (255f * mean[i].coerceIn(0f, 1f)).roundToInt()
  val pixels = IntArray(info.height * info.width) { p ->
    val r = level(p * c)
    val g = if (c == 3) level(p * c + 1) else r
    val b = if (c == 3) level(p * c + 2) else r
    (0xFF shl 24) or (r shl 16) or (g shl 8) or b
  }
  val bitmap = Bitmap.createBitmap(pixels, info.width, info.height, Bitmap.Config.ARGB_8888)
  return Bitmap.createScaledBitmap(bitmap, info.width * scale, info.height * scale, false)
}

/** Shows one sample from the prior. For brevity it decodes on the UI thread; move large decoders to a worker. */
class DecoderActivity : Activity() {
  override fun onCreate(savedInstanceState: Bundle?) {
    super.onCreate(savedInstanceState)
    val info = DecoderInfo.fromAssets(this)
    val mean = CompiledDecoder(this, info).use { it.decode(sampleZ(info.latentDim, seed = 0L)) }
    setContentView(ImageView(this).apply { setImageBitmap(toBitmap(mean, info)) })
  }
}
