import SwiftUI

@main
struct EdgeKDDemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
