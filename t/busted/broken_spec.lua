-- A spec file that does not load: busted reports its own error.
describe("broken", function()
   it("never runs", function() end)
end
