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
        self.model = try VNCoreMLModel(for: mlModel)
        self.spec = spec
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
        var probabilities = [Double](repeating: 0, count: spec.labels.count)
        for o in observations {
            if let i = spec.labels.firstIndex(of: o.identifier) { probabilities[i] = Double(o.confidence) }
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
