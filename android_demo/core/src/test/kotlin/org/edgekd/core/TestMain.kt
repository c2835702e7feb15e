package org.edgekd.core

import kotlin.system.exitProcess

/** Runs [CoreTests] without JUnit (none is reachable on the CI machine); exits 1 on any failure. */
fun main() {
    var failed = 0
    for ((name, test) in CoreTests.all) {
        try {
            test()
            println("PASS $name")
        } catch (e: Throwable) {
            failed++
            println("FAIL $name: $e")
            e.stackTrace.take(4).forEach { println("    at $it") }
        }
    }
    println("${CoreTests.all.size - failed} passed, $failed failed")
    if (failed > 0) exitProcess(1)
}
