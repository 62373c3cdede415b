# The custom-blocks skill (.ai/skills/custom-blocks/SKILL.md) followed from scratch: its files and shell steps are
# extracted into an empty folder, a plugin is built against the installed package and run from a recipe.
add_test(NAME skill_custom_blocks COMMAND ${CMAKE_CURRENT_LIST_DIR}/custom_blocks.sh ${PROJECT_BINARY_DIR})
set_tests_properties(skill_custom_blocks PROPERTIES LABELS "skills" TIMEOUT 600)
