import Foundation

/// A manifest that cannot be used, with the field at fault in the message.
struct ManifestError: LocalizedError {
    let message: String
    var errorDescription: String? { message }
}

/// Typed, path-naming access to a JSON object. The accessor names (`string`, `int`, `number`,
/// `obj`, `objOrNull`, `objList`, `stringList`) match the Kotlin core's, so
/// tests/test_app_contract.py can list every field both apps read.
struct Fields {
    let dict: [String: Any]
    let path: String

    private func raw(_ key: String) throws -> Any {
        guard let value = dict[key] else { throw ManifestError(message: "\(path) lacks \"\(key)\"") }
        return value
    }

    private func bad(_ key: String, _ want: String) -> ManifestError {
        ManifestError(message: "\(path).\(key): expected \(want)")
    }

    private static func isBool(_ n: NSNumber) -> Bool {
        CFGetTypeID(n) == CFBooleanGetTypeID()
    }

    func string(_ key: String) throws -> String {
        guard let v = try raw(key) as? String else { throw bad(key, "a string") }
        return v
    }

    func number(_ key: String) throws -> Double {
        guard let v = try raw(key) as? NSNumber, !Fields.isBool(v) else { throw bad(key, "a number") }
        return v.doubleValue
    }

    func int(_ key: String) throws -> Int {
        guard let v = try raw(key) as? NSNumber, !Fields.isBool(v),
              v.doubleValue == v.doubleValue.rounded(), abs(v.doubleValue) < 1e9 else {
            throw bad(key, "an integer")
        }
        return v.intValue
    }

    func obj(_ key: String) throws -> Fields {
        guard let v = try objOrNull(key) else { throw bad(key, "an object") }
        return v
    }

    func objOrNull(_ key: String) throws -> Fields? {
        let v = try raw(key)
        if v is NSNull { return nil }
        guard let d = v as? [String: Any] else { throw bad(key, "an object or null") }
        return Fields(dict: d, path: "\(path).\(key)")
    }

    func objList(_ key: String) throws -> [Fields] {
        guard let list = try raw(key) as? [Any] else { throw bad(key, "an array") }
        return try list.enumerated().map { i, v in
            guard let d = v as? [String: Any] else { throw bad(key, "an array of objects") }
            return Fields(dict: d, path: "\(path).\(key)[\(i)]")
        }
    }

    func stringList(_ key: String) throws -> [String] {
        guard let list = try raw(key) as? [String] else { throw bad(key, "an array of strings") }
        return list
    }
}

/// The Core ML artefact of manifest.json (docs/MANIFEST.md) and what the app needs to decide.
struct ModelSpec {
    static let supportedVersion = 1

    let name: String
    let path: String
    let precision: String
    let size: Int
    let resize: String  // "squash" or "center_crop"
    let labels: [String]
    let positiveIndex: Int
    let temperature: Double
    let threshold: Double
    let dataset: String     // the training data's name (exporters.sync_demos writes it)
    let gateStatus: String  // "pass" or "not parity-checked" (shipped with --allow-ungated)
    let gateDetail: String

    var parityChecked: Bool { gateStatus == "pass" }

    static func read(_ data: Data, source: String = "manifest.json") throws -> ModelSpec {
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw ManifestError(message: "\(source): invalid JSON (\(error.localizedDescription))")
        }
        guard let dict = json as? [String: Any] else { throw ManifestError(message: "\(source): not a JSON object") }
        let top = Fields(dict: dict, path: source)
        let version = try top.int("manifest_version")
        guard version == supportedVersion else {
            throw ManifestError(message: "\(source): manifest_version \(version), this app reads \(supportedVersion)")
        }
        guard let a = try top.objList("artifacts").first(where: { (try? $0.string("format")) == "coreml" }) else {
            throw ManifestError(message: "\(source): no coreml artefact; run python -m exporters.sync_demos")
        }
        return try artifact(a)
    }

    private static func artifact(_ a: Fields) throws -> ModelSpec {
        let prep = try a.obj("preprocessing")
        let name = try a.string("name")
        let path = try a.string("path")
        let precision = try a.string("precision")
        let size = try prep.int("size")
        let resize = try prep.string("resize")
        let labels = try a.stringList("labels")
        let positiveIndex = try a.int("positive_index")
        let temperature = try a.number("temperature")
        let threshold = try a.number("threshold")
        let inputType = try a.obj("input").string("dtype")
        let outputKind = try a.obj("output").string("kind")
        let dataset = try a.string("dataset")
        let gate = try a.obj("gate")
        let gateStatus = try gate.string("status")
        let gateDetail = try gate.string("detail")
        let context = "artefact \(name)"
        guard inputType == "image" else {
            throw ManifestError(message: "\(context): input dtype \(inputType), expected image")
        }
        // Vision returns a classifier's probabilities, with the temperature applied inside the model.
        guard outputKind == "probabilities" else {
            throw ManifestError(message: "\(context): output kind \(outputKind), expected probabilities")
        }
        guard resize == "squash" || resize == "center_crop" else {
            throw ManifestError(message: "\(context): unknown resize rule \(resize)")
        }
        guard labels.indices.contains(positiveIndex) else {
            throw ManifestError(message: "\(context): positive_index \(positiveIndex) out of range")
        }
        guard (0.0...1.0).contains(threshold) else {
            throw ManifestError(message: "\(context): threshold outside [0, 1]")
        }
        guard gateStatus == "pass" || gateStatus == "not parity-checked" else {
            throw ManifestError(message: "\(context): gate status \(gateStatus); re-run python -m exporters.sync_demos")
        }
        let spec = ModelSpec(
            name: name, path: path, precision: precision, size: size, resize: resize, labels: labels,
            positiveIndex: positiveIndex, temperature: temperature, threshold: threshold,
            dataset: dataset, gateStatus: gateStatus, gateDetail: gateDetail
        )
        return spec
    }
}
