import PhotosUI
import SwiftUI
import UIKit

/// The screen's state; the classifier loads once, when the screen appears.
@MainActor
final class DemoModel: ObservableObject {
    @Published var image: UIImage?
    @Published var result: Classification?
    @Published var error: String?
    @Published var running = false
    let classifier: Classifier?
    let loadError: String?

    init() {
        do {
            classifier = try Classifier()
            loadError = nil
        } catch {
            classifier = nil
            loadError = error.localizedDescription
        }
    }

    func run(_ item: PhotosPickerItem?) {
        guard let item, let classifier else { return }
        running = true
        error = nil
        Task {
            do {
                guard let data = try await item.loadTransferable(type: Data.self),
                      let picked = UIImage(data: data), let pixels = picked.cgImage else {
                    throw ManifestError(message: "cannot read this photo")
                }
                let outcome = try await Task.detached(priority: .userInitiated) {
                    try classifier.classify(pixels)
                }.value
                image = picked
                result = outcome
            } catch {
                self.error = error.localizedDescription
            }
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
                NoticeView()
                PhotosPicker(selection: $selection, matching: .images) {
                    Label("Pick a photo", systemImage: "photo.on.rectangle")
                }
                .buttonStyle(.borderedProminent)
                .disabled(model.classifier == nil || model.running)
                if let message = model.loadError {
                    Text("Model not loaded: \(message)").foregroundStyle(.red)
                }
                if let spec = model.classifier?.spec {
                    Text("Model: \(spec.name) (\(spec.precision), \(spec.size) px, \(spec.resize))").font(.footnote)
                }
                if let image = model.image {
                    Image(uiImage: image).resizable().scaledToFit().frame(maxHeight: 320)
                }
                if model.running {
                    ProgressView("Running…")
                } else if let result = model.result, let spec = model.classifier?.spec {
                    ResultCard(spec: spec, result: result)
                } else if model.image == nil {
                    Text("Pick a dermoscopy photo to run the model on this device.")
                }
                if let message = model.error {
                    Text(message).foregroundStyle(.red)
                }
            }
            .padding()
        }
        .onChange(of: selection) { _, item in
            model.run(item)
        }
    }
}

struct NoticeView: View {
    var body: some View {
        Text("Research demo, not a medical device. It has not been clinically validated and must not be used to diagnose, screen for or rule out skin cancer. See a dermatologist about any skin lesion that worries you.")
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
            Text("P(\(spec.labels[spec.positiveIndex])) = \(format(result.positiveProbability, 3))")
                .font(.title3).bold()
            Text("Decision: \(result.label) (\(result.positive ? "at or above" : "below") the threshold \(format(spec.threshold, 3)))")
                .bold()
            Text("Inference: \(format(result.inferenceMs, 1)) ms (Vision + Core ML)")
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
