import PhotosUI
import SwiftUI
import UIKit

/// What the app says about a result, in screening language (the same words as the Android app's
/// org.edgekd.core.Screening): above or below the model's referral threshold, never a diagnosis.
enum Screening {
    static let notice = "Research demo, not a medical device. It has not been clinically validated and must not be used to diagnose skin cancer or to rule it out. See a clinician (a dermatologist) about any skin lesion that worries you."
    static let above = "Above the model's referral threshold"
    static let below = "Below the model's referral threshold"
    static let aboveAdvice = "The model would refer this lesion for review. Most lesions above the threshold are not melanoma: see a clinician to have it checked."
    static let belowAdvice = "This does not rule out melanoma. See a clinician about any lesion that is new, changing, bleeding or worries you."
    static let notChecked = "NOT parity-checked"

    static func trainedOn(_ spec: ModelSpec) -> String { "Trained on: \(spec.dataset)" }

    static func gate(_ spec: ModelSpec) -> String {
        spec.parityChecked ? "Parity-checked: \(spec.gateDetail)" : "\(notChecked): \(spec.gateDetail)"
    }
}

/// The screen's state. The classifier loads off the main thread when the screen appears (the
/// first screen shows at once); a new pick clears the previous photo and result before anything
/// else, and only the latest pick may write its result.
@MainActor
final class DemoModel: ObservableObject {
    @Published var image: UIImage?
    @Published var result: Classification?
    @Published var error: String?
    @Published var running = false
    @Published var classifier: Classifier?
    @Published var loadError: String?
    @Published var loading = true
    private var currentPick = UUID()

    func load() async {
        guard classifier == nil, loadError == nil else { return }
        let outcome = await Task.detached(priority: .userInitiated) {
            Result { try Classifier() }
        }.value
        switch outcome {
        case .success(let loaded): classifier = loaded
        case .failure(let failure): loadError = failure.localizedDescription
        }
        loading = false
    }

    func run(_ item: PhotosPickerItem?) {
        guard let item, let classifier else { return }
        let pick = UUID()
        currentPick = pick
        image = nil
        result = nil
        error = nil
        running = true
        Task {
            var shown: (UIImage, Classification)?
            var failure: String?
            do {
                guard let data = try await item.loadTransferable(type: Data.self),
                      let picked = UIImage(data: data), let pixels = picked.cgImage else {
                    throw ManifestError(message: "cannot read this photo")
                }
                let outcome = try await Task.detached(priority: .userInitiated) {
                    try classifier.classify(pixels)
                }.value
                shown = (picked, outcome)
            } catch {
                failure = error.localizedDescription
            }
            guard currentPick == pick else { return }  // a newer pick owns the screen
            image = shown?.0
            result = shown?.1
            self.error = failure
            running = false
        }
    }
}

struct ContentView: View {
    @StateObject private var model = DemoModel()
    @State private var selection: PhotosPickerItem?

    var body: some View {
        ScrollView {
            VStack(alignment: .leading, spacing: 12) {
                Text("EdgeKD melanoma demo").font(.title2).bold()
                WarningView(text: Screening.notice)
                PhotosPicker(selection: $selection, matching: .images) {
                    Label("Pick a photo", systemImage: "photo.on.rectangle")
                }
                .buttonStyle(.borderedProminent)
                .disabled(model.classifier == nil || model.running)
                if model.loading {
                    ProgressView("Loading the model…")
                }
                if let message = model.loadError {
                    Text("Model not loaded: \(message)").foregroundStyle(.red)
                }
                if let spec = model.classifier?.spec {
                    Text("Model: \(spec.name) (\(spec.precision), \(spec.size) px, \(spec.resize))").font(.footnote)
                    Text(Screening.trainedOn(spec)).font(.footnote)
                    if spec.parityChecked {
                        Text(Screening.gate(spec)).font(.footnote)
                    } else {
                        WarningView(text: Screening.gate(spec))
                    }
                }
                if let image = model.image {
                    Image(uiImage: image).resizable().scaledToFit().frame(maxHeight: 320)
                }
                if model.running {
                    ProgressView("Running…")
                } else if let result = model.result, let spec = model.classifier?.spec {
                    ResultCard(spec: spec, result: result)
                } else if model.error == nil {
                    Text("Pick a dermoscopy photo to run the model on this device.")
                }
                if let message = model.error {
                    Text(message).foregroundStyle(.red)
                }
            }
            .padding()
        }
        .task { await model.load() }
        .onChange(of: selection) { _, item in
            model.run(item)
        }
    }
}

struct WarningView: View {
    let text: String

    var body: some View {
        Text(text)
            .bold()
            .foregroundStyle(.white)
            .padding(12)
            .frame(maxWidth: .infinity, alignment: .leading)
            .background(RoundedRectangle(cornerRadius: 12).fill(Color.red.opacity(0.85)))
    }
}

struct ResultCard: View {
    let spec: ModelSpec
    let result: Classification

    var body: some View {
        VStack(alignment: .leading, spacing: 4) {
            Text(result.positive ? Screening.above : Screening.below)
                .font(.title3).bold()
            Text("Model score for \(spec.labels[spec.positiveIndex]): \(format(result.positiveProbability, 3)) (referral threshold \(format(spec.threshold, 3)))")
            Text(result.positive ? Screening.aboveAdvice : Screening.belowAdvice)
                .bold()
            Text("Inference: \(format(result.inferenceMs, 1)) ms (Vision + Core ML)").font(.footnote)
            Text("Temperature \(format(spec.temperature, 2)), applied inside the model; probabilities \(result.probabilities.map { format($0, 3) }.joined(separator: ", "))")
                .font(.footnote)
        }
        .padding(12)
        .frame(maxWidth: .infinity, alignment: .leading)
        .background(RoundedRectangle(cornerRadius: 12).fill(Color(uiColor: .secondarySystemBackground)))
    }

    private func format(_ x: Double, _ digits: Int) -> String {
        String(format: "%.\(digits)f", x)
    }
}
