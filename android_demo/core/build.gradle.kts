// Pure Kotlin/JVM: manifest parsing, image checks, preprocessing, post-processing, screening
// wording and the parity file format (safetensors). No Android imports, so the same sources compile
// with a plain kotlinc on CI (scripts/kotlin.sh, tests/test_kotlin_core.py) and are held there to
// the Python preprocessing. JSON is org.json: built into Android, so compile-only here (the app
// uses the platform's); the tests run with Android's implementation from Maven (CI: Debian's
// libandroid-json-java).
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.kotlin.jvm)
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    compileOnly(libs.android.json)
    testImplementation(libs.android.json)
    testImplementation(kotlin("test"))
}

// The tests are plain functions run by TestMain (CI has no JUnit); `./gradlew :core:check` runs them.
val coreTests by tasks.registering(JavaExec::class) {
    group = "verification"
    description = "Runs the core module's tests (org.edgekd.core.TestMainKt)."
    classpath = sourceSets["test"].runtimeClasspath
    mainClass.set("org.edgekd.core.TestMainKt")
}

tasks.named("check") {
    dependsOn(coreTests)
}
