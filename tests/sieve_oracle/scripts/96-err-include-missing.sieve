# include of a missing script without :optional: compile error.
require "include";
include :personal "this-script-does-not-exist";
