// kerasvae on iOS: one image from an exported TFLite decoder (`kerasvae export RUN --to DIR --tflite ...`).
//
// NOT COMPILED in this repository (no Xcode or Swift toolchain here): a snippet to copy into an app, its API
// names checked against the library's sources, not by a build. Written against TensorFlowLiteSwift, LiteRT's
// Swift library (CocoaPods `pod 'TensorFlowLiteSwift'`, module `TensorFlowLite`; SignatureRunner is in its
// sources since 2022, so use a recent 2.x pod). Names checked in tensorflow/tensorflow tensorflow/lite/swift/Sources/:
//   Interpreter.swift: Interpreter(modelPath:options:), Interpreter.Options.threadCount, allocateTensors(),
//     inputTensorCount, outputTensorCount, input(at:), output(at:), copy(_:toInputAt:), invoke(),
//     signatureRunner(with:). Tensor: name, data, shape.
//   SignatureRunner.swift: invoke(with: [String: Data]), output(named:).
// The pod must be at least each file's min_runtime_version in model.json (2.17.0 for the dynamic files).
//
// Bundle resources (../README.md): model.json and the batch-1 decoder that model.json's recommended_mode
// names, e.g. decoder_dynamic.tflite.
//
// The files: one signature "decode", static shapes. Input z float32 [1, latent_dim] (conditional models also
// label int32 [1]); outputs mean float32 [1, H, W, C] NHWC in [0, 1] and the likelihood's parameters
// ("logits" for Bernoulli). int8 files keep float32 input and output.
//
// Interpreter's API is index-based: input(at:) and output(at:) take a position among the model's inputs and
// outputs. model.json records each file's raw tensor names (tensors.inputs/outputs[...].name, e.g.
// "StatefulPartitionedCall_3:1" for mean); VAEDecoder matches them against interpreter.output(at:).name.
// model.json's `index` is the tensor index in the subgraph (e.g. 23), not that position.

import CoreGraphics
import Foundation
import TensorFlowLite
import UIKit

enum DecoderError: Error {
  case missing(String)
}

/// What the app needs from model.json.
struct ModelInfo: Decodable {
  struct TensorInfo: Decodable {
    let name: String  // raw tensor name in this file
    let index: Int  // tensor index in the subgraph
    let shape: [Int]
    let dtype: String
  }
  struct Tensors: Decodable {
    let inputs: [String: TensorInfo]
    let outputs: [String: TensorInfo]
  }
  struct FileInfo: Decodable {
    let file: String
    let tensors: Tensors
  }
  struct Decoder: Decodable {
    let signature: String
    let files: [String: [String: FileInfo]]  // mode -> batch size ("1", "16") -> file
  }

  let latentDim: Int
  let inputShape: [Int]  // [H, W, C]
  let recommendedMode: String
  let numClasses: Int?  // not nil: the decoder also takes `label`
  let decoder: Decoder

  enum CodingKeys: String, CodingKey {
    case latentDim = "latent_dim", inputShape = "input_shape", recommendedMode = "recommended_mode"
    case numClasses = "num_classes", decoder
  }

  static func load(from bundle: Bundle = .main) throws -> ModelInfo {
    guard let url = bundle.url(forResource: "model", withExtension: "json") else {
      throw DecoderError.missing("model.json in the app bundle")
    }
    return try JSONDecoder().decode(ModelInfo.self, from: Data(contentsOf: url))
  }
}

/// The batch-1 decoder of one mode (default: model.json's recommended_mode) through the index-based Interpreter.
final class VAEDecoder {
  let info: ModelInfo
  let file: ModelInfo.FileInfo
  let modelPath: String
  var height: Int { info.inputShape[0] }
  var width: Int { info.inputShape[1] }
  var channels: Int { info.inputShape[2] }
  private let interpreter: Interpreter
  private var positions: [String: Int] = [:]

  init(bundle: Bundle = .main, mode: String? = nil) throws {
    let info = try ModelInfo.load(from: bundle)
    let mode = mode ?? info.recommendedMode
    guard let file = info.decoder.files[mode]?["1"] else {
      throw DecoderError.missing("a batch-1 \(mode) decoder in model.json")
    }
    guard let path = bundle.path(forResource: file.file, ofType: nil) else {
      throw DecoderError.missing("\(file.file) in the app bundle")
    }
    self.info = info
    self.file = file
    modelPath = path
    var options = Interpreter.Options()
    options.threadCount = 1
    interpreter = try Interpreter(modelPath: path, options: options)
    try interpreter.allocateTensors()  // static shapes: once
  }

  /// `mean` for one z: H*W*C floats in [0, 1], NHWC (row by row, channels innermost).
  func decode(_ z: [Float], label: Int32 = 0) throws -> [Float] {
    precondition(z.count == info.latentDim, "z needs latent_dim = \(info.latentDim) values")
    try interpreter.copy(z.withUnsafeBufferPointer { Data(buffer: $0) }, toInputAt: position(input: "z"))
    if info.numClasses != nil {
      try interpreter.copy(withUnsafeBytes(of: label) { Data($0) }, toInputAt: position(input: "label"))
    }
    try interpreter.invoke()
    let mean = try interpreter.output(at: position(output: "mean"))
    return mean.data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
  }

  private func position(input name: String) throws -> Int {
    try position(name, file.tensors.inputs, interpreter.inputTensorCount) { try interpreter.input(at: $0).name }
  }

  private func position(output name: String) throws -> Int {
    try position(name, file.tensors.outputs, interpreter.outputTensorCount) { try interpreter.output(at: $0).name }
  }

  /// The position of the tensor that model.json calls `name`, found by its raw tensor name, then cached.
  private func position(
    _ name: String, _ tensors: [String: ModelInfo.TensorInfo], _ count: Int, _ rawName: (Int) throws -> String
  ) throws -> Int {
    if let known = positions[name] { return known }
    guard let raw = tensors[name]?.name else { throw DecoderError.missing("tensor \(name) in model.json") }
    for i in 0..<count {
      if try rawName(i) == raw {
        positions[name] = i
        return i
      }
    }
    throw DecoderError.missing("tensor \(raw) in \(file.file)")
  }
}

/// The same call by signature name, with no index bookkeeping (SignatureRunner). Use its own Interpreter.
func decodeWithSignatureRunner(modelPath: String, z: [Float]) throws -> [Float] {
  let interpreter = try Interpreter(modelPath: modelPath)
  let runner = try interpreter.signatureRunner(with: "decode")
  try runner.invoke(with: ["z": z.withUnsafeBufferPointer { Data(buffer: $0) }])
  let mean = try runner.output(named: "mean")
  return mean.data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
}

/// z ~ N(0, I) for a model.json with "prior": "normal": the web demo's draws for the same seed (mulberry32
/// uniforms, Box-Muller pairs, as kerasvae.export.web.prior_draws computes them), up to float rounding.
struct PriorSampler {
  private var state: UInt32

  init(seed: UInt32) { state = seed }

  private mutating func uniform() -> Double {
    state = state &+ 0x6D2B_79F5
    var t = (state ^ (state >> 15)) &* (state | 1)
    t = (t &+ ((t ^ (t >> 7)) &* (t | 61))) ^ t
    return Double(t ^ (t >> 14)) / 4_294_967_296
  }

  mutating func normals(count: Int) -> [Float] {
    var values: [Float] = []
    while values.count < count {
      let u1 = uniform(), u2 = uniform()
      let radius = (-2 * log(1 - u1)).squareRoot()
      values += [Float(radius * cos(2 * .pi * u2)), Float(radius * sin(2 * .pi * u2))]
    }
    return Array(values.prefix(count))
  }
}

/// `mean` as a CGImage: grey = round(255 * p) for C = 1, RGB for C = 3.
func makeImage(_ mean: [Float], width: Int, height: Int, channels: Int) -> CGImage? {
  guard channels == 1 || channels == 3, mean.count == width * height * channels else { return nil }
  let bytes = mean.map { UInt8((255 * min(max($0, 0), 1)).rounded()) }
  guard let provider = CGDataProvider(data: Data(bytes) as CFData) else { return nil }
  return CGImage(
    width: width, height: height, bitsPerComponent: 8, bitsPerPixel: 8 * channels, bytesPerRow: width * channels,
    space: channels == 1 ? CGColorSpaceCreateDeviceGray() : CGColorSpaceCreateDeviceRGB(),
    bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.none.rawValue),
    provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
}

extension VAEDecoder {
  /// One sample from the prior as a UIImage. Show it with
  /// `imageView.layer.magnificationFilter = .nearest` so its few pixels stay crisp when scaled up.
  func sample(seed: UInt32 = 0) throws -> UIImage? {
    var sampler = PriorSampler(seed: seed)
    let mean = try decode(sampler.normals(count: info.latentDim))
    return makeImage(mean, width: width, height: height, channels: channels).map { UIImage(cgImage: $0) }
  }
}
