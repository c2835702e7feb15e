// Pure Kotlin/JVM: manifest parsing, preprocessing, post-processing and the parity file format.
// No Android imports, so the same sources compile with a plain kotlinc on CI (scripts/kotlin.sh,
// tests/test_kotlin_core.py) and are held there to the Python preprocessing.
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
