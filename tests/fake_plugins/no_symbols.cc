// A shared library that is named like a plugin but exports neither plugin symbol.
extern "C" __attribute__((visibility("default"))) int not_a_bnb_plugin(void) { return 42; }
