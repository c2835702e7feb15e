import CoreGraphics
import CoreML
import Foundation
import ImageIO
import Vision

/// One classification: probabilities per label, the decision at the manifest's threshold, timing.
struct Classification {
    let probabilities: [Double]
    let positiveProbability: Double
    let positive: Bool
    let label: String
    let inferenceMs: Double
}

/// The bundled Core ML classifier, run through Vision. The model takes an RGB image, normalizes it
/// and returns softmax(logits / temperature) (exporters/coreml.py); Vision scales the photo to the
/// model's input by the manifest's resize rule (squash -> scaleFill, center_crop -> centerCrop).
/// Vision's scaler is not the Python triangle filter, so pixels can differ slightly from
/// kd_core.data.transforms; the Android app ports that filter exactly.
///
/// Loading is slow (compiling for the Neural Engine): DemoModel creates this off the main thread.
/// At load the model's class labels and its embedded manifest entry (user-defined metadata
/// `edgekd_manifest`, written by exporters/coreml.py) are checked against manifest.json, so a
/// model synced from another export is refused instead of mislabelled.
final class Classifier: @unchecked Sendable {
    let spec: ModelSpec
    private let model: VNCoreMLModel

    init(bundle: Bundle = .main) throws {
        guard let manifestURL = Classifier.resource(bundle, "manifest", "json") else {
            throw ManifestError(message: "manifest.json is not in the app: run `python -m exporters.sync_demos EXPORT_DIR` and rebuild")
        }
        let spec = try ModelSpec.read(try Data(contentsOf: manifestURL))
        let stem = (spec.path as NSString).deletingPathExtension
        guard let modelURL = Classifier.resource(bundle, stem, "mlmodelc") else {
            throw ManifestError(message: "\(spec.path) (named by manifest.json) is not in the app: sync it and rebuild")
        }
        let configuration = MLModelConfiguration()
        configuration.computeUnits = .all
        let mlModel = try MLModel(contentsOf: modelURL, configuration: configuration)
        try Classifier.crossCheck(mlModel.modelDescription, spec)
        self.model = try VNCoreMLModel(for: mlModel)
        self.spec = spec
    }

    /// The model file and manifest.json must describe the same classifier and decision.
    static func crossCheck(_ description: MLModelDescription, _ spec: ModelSpec) throws {
        let labels = (description.classLabels as? [String]) ?? []
        guard labels == spec.labels else {
            throw ManifestError(message: "\(spec.path) has class labels \(labels), manifest.json says \(spec.labels): sync again")
        }
        let creator = description.metadata[MLModelMetadataKey.creatorDefinedKey] as? [String: String]
        guard let text = creator?["edgekd_manifest"], let data = text.data(using: .utf8),
              let embedded = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ManifestError(message: "\(spec.path) carries no edgekd_manifest metadata: export it with exporters.all")
        }
        var differs: [String] = []
        if (embedded["labels"] as? [String]) != spec.labels { differs.append("labels") }
        if (embedded["positive_index"] as? Int) != spec.positiveIndex { differs.append("positive_index") }
        if (embedded["temperature"] as? Double) != spec.temperature { differs.append("temperature") }
        if (embedded["threshold"] as? Double) != spec.threshold { differs.append("threshold") }
        let prep = embedded["preprocessing"] as? [String: Any]
        if (prep?["size"] as? Int) != spec.size || (prep?["resize"] as? String) != spec.resize {
            differs.append("preprocessing")
        }
        guard differs.isEmpty else {
            throw ManifestError(message: "\(spec.path) was exported with another \(differs.joined(separator: ", ")) than manifest.json says: sync the model and its manifest together")
        }
    }

    /// Xcode copies Model/ flat into the bundle; look in Model/ too in case it keeps the folder.
    private static func resource(_ bundle: Bundle, _ name: String, _ ext: String) -> URL? {
        bundle.url(forResource: name, withExtension: ext)
            ?? bundle.url(forResource: name, withExtension: ext, subdirectory: "Model")
    }

    /// Classify the image's stored pixels (orientation .up: like the Python side, no EXIF rotation).
    func classify(_ image: CGImage) throws -> Classification {
        let request = VNCoreMLRequest(model: model)
        request.imageCropAndScaleOption = spec.resize == "center_crop" ? .centerCrop : .scaleFill
        let handler = VNImageRequestHandler(cgImage: image, orientation: .up, options: [:])
        let start = DispatchTime.now().uptimeNanoseconds
        try handler.perform([request])
        let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        guard let observations = request.results as? [VNClassificationObservation], !observations.isEmpty else {
            throw ManifestError(message: "\(spec.name) returned no classifications: is it a Core ML classifier?")
        }
        // Every label must come back: a missing one is an error, never a silent probability 0.
        var byLabel: [String: Double] = [:]
        for o in observations { byLabel[o.identifier] = Double(o.confidence) }
        let probabilities = try spec.labels.map { label -> Double in
            guard let p = byLabel[label] else {
                throw ManifestError(message: "\(spec.name) returned no probability for \"\(label)\" (it returned \(byLabel.keys.sorted()))")
            }
            return p
        }
        let p = probabilities[spec.positiveIndex]
        let positive = p >= spec.threshold
        return Classification(
            probabilities: probabilities,
            positiveProbability: p,
            positive: positive,
            label: positive ? spec.labels[spec.positiveIndex] : Classifier.bestOther(probabilities, spec),
            inferenceMs: ms
        )
    }

    /// Below the threshold the answer is the most likely of the other classes.
    private static func bestOther(_ p: [Double], _ spec: ModelSpec) -> String {
        let others = p.indices.filter { $0 != spec.positiveIndex }
        guard let best = others.max(by: { p[$0] < p[$1] }) else { return spec.labels[spec.positiveIndex] }
        return spec.labels[best]
    }
}
