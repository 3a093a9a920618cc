# A constant redirect address that is not an address: compile error.
redirect "not an address";
